"""One error vocabulary for every promotion step. The tree::

    PromoteError             anything this tool raises on purpose; the message names the thing and the fix
    +-- RefusedError         terminal: bad input, missing evidence, a conflict. Never retried: the same
    |                        request fails the same way, and nothing was changed.
    +-- TransientError       the network, a 5xx or 429, an API server restarting, for every attempt made at
    |                        the border: the step is retried with backoff (``tasks.steps.retry_if_transient``).
    +-- NothingToDoError     a clear no-op (nothing new to promote); the flow ends successfully and says why.
    +-- OutcomeError         the change was made and the environment did not come up as it must: verification,
    |                        health checks, a promotion or a nightly's pipeline that ended without the new
    |                        version running. Never retried as a step (the run rolls back, or says what to do).
    +-- GitError             one outside system's failures, raised by its own module (:mod:`tasks.gitrepo`,
    +-- KubeError            :mod:`tasks.kube`, :mod:`tasks.registry`): terminal, except the subclass that is
    +-- RegistryError        also ``TransientError`` (``TransientGitError``, ``TransientKubeError``,
                             ``TransientRegistryError``), which that module raises after reading the failure.

Only the module that talks to a system decides whether its failure is transient, so no other module reads
another's error text, and retrying is one ``isinstance`` check.
"""

from __future__ import annotations

__all__ = ["NothingToDoError", "OutcomeError", "PromoteError", "RefusedError", "TransientError", "is_transient"]


class PromoteError(Exception):
    """Base of every error this tool raises on purpose."""


class RefusedError(PromoteError):
    """Terminal: this promotion must not or cannot happen as asked; retrying will not help."""


class TransientError(PromoteError):
    """The outside system was unavailable for every attempt made here; trying again later may succeed."""


class NothingToDoError(PromoteError):
    """A clear no-op: e.g. no registry tag matches the policy, or the value is already promoted."""


class OutcomeError(PromoteError):
    """The promotion's change was made and the environment did not come up as it must; the message says what it
    ran into and what happened to the change (rolled back, or left for a person)."""


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TransientError)
