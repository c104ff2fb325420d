"""The pipeline schema: one application's promotion, declared in ``deployments/*.yaml``.

The models validate everything a flow needs before anything changes; :mod:`pipeline.load` reads a file into
them and turns pydantic's errors into ``file:line: field.path: what is wrong (allowed: ...)`` lines. This
module imports no task module and no Git library, so validating a file stays cheap.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from rules.fluxtemplate import TemplateError, check
from rules.refnames import branch_name_problem, ref_name_problem
from rules.signatures import load_public_key
from rules.versions import SemverRange, TagScheme, VersionError
from rules.windows import Window, WindowError, parse_duration
from rules.yamlpath import PathSyntaxError, parse_path

# Kubernetes object names (RFC 1123 subdomain) and namespaces (RFC 1123 label).
_K8S_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
_K8S_NAMESPACE = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_K8S_LABEL = r"^(?=[-a-z0-9]{1,63}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # the same rule; its own help text
_ENV_NAME = r"^[a-z][a-z0-9-]{0,39}$"
_ENV_VAR = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
_BLOCK_NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"
# Relative path inside the repository: no absolute paths, no "..", no option-looking parts.
_REPO_PATH = r"^(?!/)(?!.*(^|/)\.\.(/|$))(?!-)[A-Za-z0-9_.@/+-]+$"
_DNS_NAME = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$"  # a DNS name, lowercase
_IMAGE_NAME = r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]{1,2}[a-z0-9]+)*)*$"
_POLICY_REF = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?:[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"

# What each pattern means, for error messages.
PATTERN_HELP = {
    _K8S_NAME: "a Kubernetes object name: lowercase letters, digits, '-' and '.'",
    _K8S_NAMESPACE: "a Kubernetes namespace: lowercase letters, digits and '-'",
    _K8S_LABEL: "a Kubernetes container name: up to 63 lowercase letters, digits and '-'",
    _ENV_NAME: "lowercase letters, digits and '-', starting with a letter",
    _ENV_VAR: "an environment variable name such as GITOPS_TOKEN",
    _BLOCK_NAME: "lowercase letters, digits and '-'",
    _REPO_PATH: "a path relative to the repository root, without '..' or a leading '/' or '-'",
    _IMAGE_NAME: "an image repository such as app, registry.example.org:5000/org/app (no tag)",
    _POLICY_REF: "namespace:name of the ImagePolicy, as in the setter markers",
}


# The placeholders of TrackBranch.merge_message, in the order the error message lists them.
MERGE_PLACEHOLDERS = ("from_branch", "environment", "pipeline")
_PLACEHOLDER_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def fill_placeholders(template: str, values: dict[str, str], field: str) -> str:
    """``template`` with each ``{name}`` of ``values`` replaced and ``{{``/``}}`` as literal braces.

    Not ``str.format``: a format spec (``{environment:>999999999}`` allocates a gigabyte), a conversion or an
    attribute (``{environment.__class__}``) is refused, as is any other brace; the ValueError names ``field``
    and the allowed placeholders."""
    out: list[str] = []
    position = 0
    for token in _PLACEHOLDER_TOKEN.finditer(template):
        out.append(template[position : token.start()])
        position = token.end()
        text = token.group()
        if text in ("{{", "}}"):
            out.append(text[0])
        elif token.group(1) in values:
            out.append(values[token.group(1)])
        else:
            allowed = ", ".join(f"{{{name}}}" for name in values)
            what = f"a lone {text!r}" if text in "{}" else f"{_echo(text)} is not a placeholder"
            raise ValueError(
                f"{field}: {what}; allowed: {allowed}, written exactly so (no format spec, conversion or "
                "attribute); write {{ and }} for literal braces"
            )
    out.append(template[position:])
    return "".join(out)


def _echo(value: str, limit: int = 80) -> str:
    """A user's value, quoted and cut to ``limit`` characters, for an error message."""
    text = repr(value[: limit + 1])
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _checked_branch(branch: str) -> str:
    problem = branch_name_problem(branch)
    if problem is not None:
        raise ValueError(f"{_echo(branch)} is not a valid Git branch name: {problem}")
    return branch


def _inside_work_tree(path: str) -> str:
    """Beyond the pattern: no part named ``.git`` (any case: case-insensitive file systems), so a promotion
    never writes Git's own files (``.git/config`` holds commands git runs)."""
    if any(part.lower() == ".git" for part in path.split("/")):
        raise ValueError(
            f"{_echo(path)} is inside the .git directory; give a path to a file of the repository's work tree"
        )
    return path


# A file of the repository's work tree: relative, no "..", no ".git" part, no option-looking start.
RepoPath = Annotated[str, Field(pattern=_REPO_PATH, max_length=1024), AfterValidator(_inside_work_tree)]
# Names with no Kubernetes or Git rule of their own still have a length (a 5000-character one is a mistake).
ShortText = Annotated[str, Field(min_length=1, max_length=200)]


class _Model(BaseModel):
    # Unknown keys are typos until proven otherwise: reject them.
    model_config = ConfigDict(extra="forbid", frozen=True, regex_engine="python-re")


class SecretRef(_Model):
    """A secret by reference: an environment variable or a Prefect Secret block, never the value."""

    env: Annotated[str | None, Field(pattern=_ENV_VAR)] = None
    secret_block: Annotated[str | None, Field(pattern=_BLOCK_NAME)] = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if (self.env is None) == (self.secret_block is None):
            raise ValueError("set exactly one of env (an environment variable) or secret_block")
        return self


class GitHubApp(_Model):
    """A GitHub App installation as the repository's credentials: its private key (by reference) signs a JWT that
    GitHub exchanges for an hour-long installation token, refreshed before it expires (tasks/forges/githubapp.py);
    Git pushes with it as ``x-access-token`` and the pull requests use it too."""

    app_id: Annotated[
        str,
        Field(
            pattern=r"^(?:[1-9][0-9]{0,11}|Iv[0-9A-Za-z.]{1,40})$",
            description="the app's App ID (digits) or Client ID (Iv...), from the app's settings page",
        ),
    ]
    installation_id: Annotated[
        int, Field(gt=0, lt=2**53, description="the number at the end of the installation's settings URL")
    ]
    private_key: SecretRef = Field(description="the app's private key (the .pem file's text) by reference")
    api_url: Annotated[
        str | None,
        Field(
            max_length=500,
            pattern=r"^https?://[^/@?#\s]+(/[^?#@\s]*)?$",
            description="GitHub's API root; default: from repository.url (https://api.github.com, or "
            "https://host/api/v3 for Enterprise Server)",
        ),
    ] = None


class GitCredentials(_Model):
    """Where the Git token comes from; the token itself never appears in a pipeline file."""

    token_env: Annotated[str | None, Field(pattern=_ENV_VAR)] = None
    secret_block: Annotated[str | None, Field(pattern=_BLOCK_NAME)] = None
    github_app: GitHubApp | None = None
    username: ShortText = "x-access-token"

    @model_validator(mode="after")
    def _one_source(self) -> GitCredentials:
        if [self.token_env, self.secret_block, self.github_app].count(None) != 2:
            raise ValueError(
                "set exactly one of token_env (an environment variable), secret_block or github_app (a GitHub App "
                "installation)"
            )
        if self.github_app is not None and self.username != "x-access-token":
            raise ValueError("a GitHub App's token is used as user x-access-token: remove username")
        return self


class GitAuthor(_Model):
    name: ShortText = "gitops-promote"
    email: Annotated[str, Field(min_length=1, max_length=254)] = "gitops-promote@localhost"

    @field_validator("name", "email")
    @classmethod
    def _identity(cls, value: str) -> str:
        # git writes "name <email>" into every commit: control characters (a NUL ends git's argument) and angle
        # brackets would break it, and git itself refuses them only when it commits, mid-promotion.
        if re.search(r"[\x00-\x1f\x7f<>]", value):
            raise ValueError("may not contain control characters (newlines, NUL) or angle brackets")
        if not value.strip():
            raise ValueError("may not be blank")
        return value


class Repository(_Model):
    url: Annotated[str, Field(min_length=1, description="clone URL or local path of the GitOps repository")]
    branch: str = "main"
    credentials: GitCredentials | None = None
    author: GitAuthor = GitAuthor()

    @field_validator("url")
    @classmethod
    def _no_inline_secret(cls, url: str) -> str:
        # Any user info in an http(s) URL is a credential (token@host or user:token@host); ssh://git@host is not.
        scheme_url = re.match(r"^[a-z][a-z0-9+.-]*://", url, re.IGNORECASE)
        if re.match(r"^https?://[^/@]*@", url, re.IGNORECASE) or re.match(
            r"^[a-z][a-z0-9+.-]*://[^/@]*:[^/@]*@", url, re.IGNORECASE
        ):
            raise ValueError(
                "the URL carries a password or token; remove it and use credentials.token_env or "
                "credentials.secret_block"
            )
        # Git appends its own path to a remote URL, so a query string only ever carries a token (?access_token=).
        if scheme_url and re.search(r"[?#]", url):
            raise ValueError(
                "the URL has a query string or fragment (such as ?access_token=); remove it and give the token "
                "by reference: credentials.token_env or credentials.secret_block"
            )
        if url.startswith("-"):
            raise ValueError("a repository URL may not start with '-'")
        # Git's remote helpers: "ext::<command>" runs a command, "fd::<n>" talks to a file descriptor; a pipeline
        # file (or whoever can edit one) must not make the worker run anything. Only these transports are read.
        transport = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)::", url)
        if transport or (scheme_url and not re.match(r"^(https?|ssh|git|file)://", url, re.IGNORECASE)):
            raise ValueError(
                "use an https://, ssh://, git://, file:// URL, a scp-like host:path or a local path; other "
                "transports (ext::, fd::, remote helpers) are refused"
            )
        if "\x00" in url or re.search(r"[\x00-\x1f\x7f]", url):
            raise ValueError("the URL contains control characters")
        return url

    @field_validator("branch")
    @classmethod
    def _branch(cls, branch: str) -> str:
        return _checked_branch(branch)


class Versioning(_Model):
    tag_prefix: Annotated[str, Field(max_length=40)] = "v"
    rc_label: Annotated[str, Field(max_length=20)] = "rc"
    bump: Literal["major", "minor", "patch"] = "patch"
    initial_version: Annotated[str, Field(max_length=100)] = "0.1.0"

    @model_validator(mode="after")
    def _scheme(self) -> Versioning:
        try:
            scheme = self.scheme
            version = scheme.parse(self.initial_version)
        except VersionError as exc:
            raise ValueError(str(exc)) from None
        # The prefix's characters are checked by TagScheme; whether the tags it makes are refs git takes
        # ("-rf1.2.3" reads as an option, "a..b/1.2.3" is no ref) only shows on a whole tag.
        for tag in (scheme.tag(version), scheme.tag(version.with_rc(1))):
            problem = ref_name_problem(tag)
            if problem is not None:
                raise ValueError(
                    f"tag_prefix {_echo(self.tag_prefix)} makes tags such as {_echo(tag)} that Git refuses: {problem}"
                )
        return self

    @property
    def scheme(self) -> TagScheme:
        return TagScheme(prefix=self.tag_prefix, rc_label=self.rc_label)


# --- how an environment tracks a version ------------------------------------------------------------


class _Track(_Model):
    """What every tracking kind declares about its place in a chain; the strategies (tasks/strategies/) do
    the rest."""

    kind: str  # each kind narrows it to its Literal (the union's discriminator)
    # The kinds an environment of this kind can be promoted from (the environment before it).
    promotes_from: ClassVar[frozenset[str]] = frozenset()
    # New versions enter the pipeline at the first environment of a kind that cuts release candidates
    # (environments before it are left alone); without one, at the first environment.
    cuts_release_candidates: ClassVar[bool] = False

    def upstream_problem(self, env: str, upstream: Environment) -> str | None:
        """Why ``env`` (of this kind) cannot be promoted from ``upstream``, with the fix; None when it can."""
        theirs = upstream.tracks.kind
        if theirs in self.promotes_from:
            return None
        return (
            f"environment {env!r} ({self.kind}) cannot be promoted from {upstream.name!r} ({theirs}): its upstream "
            f"must track {' or '.join(sorted(self.promotes_from))}"
        )


class TrackTag(_Track):
    """The environment's Argo CD Application (a file in the repository) points at a release tag."""

    promotes_from: ClassVar[frozenset[str]] = frozenset({"tag"})
    cuts_release_candidates: ClassVar[bool] = True

    kind: Literal["tag"]
    application_file: RepoPath
    source_index: Annotated[int | None, Field(ge=0, description="index in spec.sources (multi-source)")] = None


class TrackBranch(_Track):
    """The environment tracks a branch; promotion merges the upstream branch into it (``--no-ff``)."""

    promotes_from: ClassVar[frozenset[str]] = frozenset({"branch"})

    kind: Literal["branch"]
    branch: str
    merge_from: str | None = None
    merge_message: Annotated[str, Field(max_length=1000)] = "Promote {from_branch} to {environment}"

    @field_validator("merge_message")
    @classmethod
    def _message(cls, message: str) -> str:
        fill_placeholders(message, dict.fromkeys(MERGE_PLACEHOLDERS, ""), "merge_message")
        return message

    def merge_commit_message(self, environment: str, pipeline: str) -> str:
        """``merge_message`` with its placeholders filled in (validated, so it cannot fail here)."""
        values = {"from_branch": self.merge_from or "", "environment": environment, "pipeline": pipeline}
        return fill_placeholders(self.merge_message, values, "merge_message")

    def upstream_problem(self, env: str, upstream: Environment) -> str | None:
        problem = super().upstream_problem(env, upstream)
        if problem is not None or not isinstance(upstream.tracks, TrackBranch):
            return problem
        if self.merge_from is None:
            return f"environment {env!r} tracks a branch but says nothing to merge from: set tracks.merge_from"
        if self.merge_from != upstream.tracks.branch:
            return (
                f"environment {env!r} merges from {self.merge_from!r}, but the environment before it "
                f"({upstream.name!r}) tracks branch {upstream.tracks.branch!r}: set tracks.merge_from to "
                f"{upstream.tracks.branch!r}"
            )
        return None

    @field_validator("branch", "merge_from")
    @classmethod
    def _branch(cls, branch: str | None) -> str | None:
        return None if branch is None else _checked_branch(branch)


_IMAGE_KINDS = frozenset({"kustomize-image", "image-policy"})


class TrackKustomizeImage(_Track):
    """A Kustomize overlay's ``images[name=image]`` entry carries the version (``newTag`` or ``digest``)."""

    promotes_from: ClassVar[frozenset[str]] = _IMAGE_KINDS

    kind: Literal["kustomize-image"]
    file: RepoPath
    image: Annotated[str, Field(pattern=_IMAGE_NAME, max_length=255)]
    field: Literal["newTag", "digest"] = "newTag"


class ImageRegistry(_Model):
    url: Annotated[str, Field(pattern=r"^https?://[^\s/@]+(:\d+)?/?$", max_length=300)]
    repository: Annotated[str, Field(pattern=_IMAGE_NAME, max_length=255)]
    credentials: GitCredentials | None = None
    image: Annotated[
        str | None,
        Field(
            pattern=_IMAGE_NAME,
            max_length=255,
            description="the image name as the manifests write it; default: <registry host>/<repository>",
        ),
    ] = None
    token_hosts: Annotated[
        list[Annotated[str, Field(pattern=_DNS_NAME, max_length=253)]],
        Field(
            max_length=10,
            description="hosts of the registry's token service besides the registry's own, to which the "
            "credentials may be sent (e.g. auth.docker.io)",
        ),
    ] = []

    @field_validator("url")
    @classmethod
    def _host_and_port(cls, url: str) -> str:
        authority = url.split("://", 1)[1].rstrip("/")
        host, colon, port = authority.rpartition(":") if not authority.endswith("]") else (authority, "", "")
        if not colon:
            host = authority
        if not host or host == "[]":
            raise ValueError(f"registry.url {_echo(url)} has no host")
        if colon and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(f"registry.url {_echo(url)}: the port must be a number from 1 to 65535")
        return url

    @field_validator("credentials")
    @classmethod
    def _no_app(cls, credentials: GitCredentials | None) -> GitCredentials | None:
        if credentials is not None and credentials.github_app is not None:
            raise ValueError(
                "a GitHub App installation is Git and pull-request credentials, not a registry's: use "
                "token_env or secret_block"
            )
        return credentials

    @property
    def image_name(self) -> str:
        host = self.url.split("://", 1)[1].rstrip("/")
        return self.image or f"{host}/{self.repository}"


def compile_tag_pattern(pattern: str) -> Any:
    """``filter_tags.pattern`` compiled by RE2, the engine (and syntax) of Go's regexp that Flux uses: matching
    takes time linear in the tag, so no pattern can backtrack for seconds (``(a+)+$``). What Go's regexp
    refuses (lookarounds, backreferences) is refused here too, with the reason."""
    import re2  # type: ignore[import-untyped]  # only image-policy pipelines need it; validate stays cheap

    options = re2.Options()
    options.log_errors = False  # RE2 would print the whole pattern to stderr
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        raise ValueError(_re2_problem(pattern, exc)) from None


def _re2_problem(pattern: str, exc: Exception) -> str:
    reason = exc.args[0] if exc.args else ""
    reason = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
    unsupported = None
    if re.search(r"\(\?<?[=!]", pattern) and "invalid perl operator" in reason:
        unsupported = "lookarounds ((?=...), (?!...), (?<=...), (?<!...))"
    elif re.search(r"invalid escape sequence: \\[1-9]", reason):
        unsupported = "backreferences (\\1 ... \\9)"
    if unsupported:
        return (
            f"filter_tags.pattern uses {unsupported}, which Flux's regular expressions (RE2, Go's regexp) do not "
            "support; match the tag without them"
        )
    return (
        f"filter_tags.pattern is not a regular expression Flux accepts (RE2 syntax, as Go's regexp): "
        f"{_echo(reason, 120)}"
    )


class TagFilter(_Model):
    pattern: Annotated[str, Field(max_length=1000)] = ".*"
    extract: Annotated[str | None, Field(max_length=200)] = None

    @field_validator("pattern")
    @classmethod
    def _regex(cls, pattern: str) -> str:
        compile_tag_pattern(pattern)
        return pattern


class ImagePolicy(_Model):
    semver: Annotated[str | None, Field(max_length=200)] = None
    alphabetical: Literal["asc", "desc"] | None = None
    numerical: Literal["asc", "desc"] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ImagePolicy:
        chosen = [k for k in ("semver", "alphabetical", "numerical") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError("set exactly one of semver (a range such as 1.x.x), alphabetical, numerical")
        if self.semver is not None:
            try:
                SemverRange.parse(self.semver)
            except VersionError as exc:
                raise ValueError(str(exc)) from None
        return self


class TrackImagePolicy(_Track):
    """Flux-style image automation: choose a registry tag by policy, write it through setter markers."""

    promotes_from: ClassVar[frozenset[str]] = _IMAGE_KINDS

    kind: Literal["image-policy"]
    path: RepoPath
    policy: Annotated[
        str, Field(pattern=_POLICY_REF, max_length=317, description="namespace:name used in setter markers")
    ]
    registry: ImageRegistry
    filter_tags: TagFilter = TagFilter()
    choose: ImagePolicy
    message_template: Annotated[
        str,
        Field(
            max_length=10_000,
            description="commit message, as Flux's ImageUpdateAutomation messageTemplate (Go template)",
        ),
    ] = "Update {{range .Updated.Images}}{{println .}}{{end}}"

    @field_validator("message_template")
    @classmethod
    def _template(cls, template: str) -> str:
        try:
            check(template)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None
        return template


class YamlEdit(_Model):
    """One value of a ``yaml-path`` environment: where it lives, and the name that pairs it with the value of
    the same name in the environment before it."""

    file: RepoPath
    path: Annotated[
        str, Field(max_length=1000, description="dotted keys, [index] and [field=value] selectors, e.g. image.tag")
    ]
    name: Annotated[str | None, Field(pattern=_BLOCK_NAME, description="default: the path")] = None

    @field_validator("path")
    @classmethod
    def _path(cls, path: str) -> str:
        try:
            parse_path(path)
        except PathSyntaxError as exc:
            raise ValueError(str(exc)) from None
        return path

    @property
    def key(self) -> str:
        return self.name or self.path


class TrackYamlPath(_Track):
    """Values at paths in YAML files (Helm ``values.yaml`` ``image.tag``, ``Chart.yaml`` ``appVersion``, any
    manifest): promotion copies the values verified upstream, every edit in one commit."""

    promotes_from: ClassVar[frozenset[str]] = frozenset({"yaml-path"})

    kind: Literal["yaml-path"]
    edits: Annotated[list[YamlEdit], Field(min_length=1, max_length=50)]

    @model_validator(mode="after")
    def _unique(self) -> TrackYamlPath:
        keys = [edit.key for edit in self.edits]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise ValueError(f"edit names must be unique (set name: on each); repeated: {', '.join(repeated)}")
        places = [(edit.file, edit.path) for edit in self.edits]
        if len(set(places)) != len(places):
            raise ValueError("two edits write the same file and path")
        return self

    def upstream_problem(self, env: str, upstream: Environment) -> str | None:
        problem = super().upstream_problem(env, upstream)
        if problem is not None or not isinstance(upstream.tracks, TrackYamlPath):
            return problem
        ours = {edit.key for edit in self.edits}
        theirs = {edit.key for edit in upstream.tracks.edits}
        if ours != theirs:
            differ = ", ".join(sorted(ours ^ theirs))
            return (
                f"environment {env!r} and the environment before it ({upstream.name!r}) must carry the same values, "
                f"paired by name (default: the path); only one of them has: {differ}. Give each edit the same "
                "name: in both"
            )
        return None


Tracking = Annotated[
    TrackTag | TrackBranch | TrackKustomizeImage | TrackImagePolicy | TrackYamlPath, Field(discriminator="kind")
]


def _kinds(union: Any) -> set[str]:
    """The ``kind`` values of a discriminated union's models."""
    return {get_args(model.model_fields["kind"].annotation)[0] for model in get_args(get_args(union)[0])}


# --- how an environment is verified ------------------------------------------------------------------


class KubeAccess(_Model):
    kubeconfig: str | None = Field(
        default=None, max_length=4096, description="path; default: in-cluster, then ~/.kube/config"
    )
    context: Annotated[str | None, Field(max_length=253)] = None
    lock_namespace: Annotated[
        str, Field(pattern=_K8S_NAMESPACE, description="namespace of the per-environment promotion Lease")
    ] = "default"


class ArgoApplicationRef(_Model):
    kind: Literal["argocd"]
    name: Annotated[str, Field(pattern=_K8S_NAME)]
    namespace: Annotated[str, Field(pattern=_K8S_NAMESPACE)] = "argocd"
    refresh: Literal["normal", "hard"] = "normal"
    sync: bool = False


class FluxKustomizationRef(_Model):
    kind: Literal["flux"]
    name: Annotated[str, Field(pattern=_K8S_NAME)]
    namespace: Annotated[str, Field(pattern=_K8S_NAMESPACE)] = "flux-system"


GitOpsRef = Annotated[ArgoApplicationRef | FluxKustomizationRef, Field(discriminator="kind")]


class DeploymentRef(_Model):
    name: Annotated[str, Field(pattern=_K8S_NAME)]
    namespace: Annotated[str, Field(pattern=_K8S_NAMESPACE)] = "default"
    container: Annotated[str | None, Field(pattern=_K8S_LABEL)] = None
    expect_image: Annotated[
        str | None,
        Field(
            max_length=512,
            description="image the container must run once rolled out: a full reference or just a tag, with "
            "{version}/{tag} filled in; default for overlay and image-policy environments: the promoted tag",
        ),
    ] = None
    pods: Annotated[
        bool,
        Field(
            description="also check the pods of the new ReplicaSet: all Ready, and where the expected image names "
            "a digest, each container's imageID carries it (needs list on replicasets and pods)",
        ),
    ] = True


class Verification(_Model):
    cluster: KubeAccess = KubeAccess()
    gitops: GitOpsRef | None = None
    deployments: list[DeploymentRef] = []
    timeout_seconds: Annotated[float, Field(gt=0, le=86400)] = 600
    health_grace_seconds: Annotated[
        float, Field(ge=0, le=600, description="do not trust Argo CD health this soon after a sync finished")
    ] = 10


class JsonMatch(_Model):
    path: Annotated[str, Field(min_length=1, description="dotted path such as version or build.tag")]
    equals: str


class HealthCheck(_Model):
    name: str | None = None
    url: Annotated[str, Field(pattern=r"^https?://\S+$")]
    method: Literal["GET", "HEAD", "POST"] = "GET"
    expect_status: Annotated[int, Field(ge=100, le=599)] = 200
    body_contains: str | None = None
    expect_json: JsonMatch | None = None
    max_latency_ms: Annotated[float | None, Field(gt=0)] = None
    consecutive_successes: Annotated[int, Field(ge=1, le=1000)] = 1
    interval_seconds: Annotated[float, Field(gt=0, le=3600)] = 2
    soak_seconds: Annotated[float, Field(ge=0, le=86400)] = 0
    timeout_seconds: Annotated[float, Field(gt=0, le=86400)] = 120
    verify_tls: bool = True

    @field_validator("url")
    @classmethod
    def _no_credentials(cls, url: str) -> str:
        # The URL is printed in logs, reports and the results table; a password there would be too.
        authority = re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://([^/?#]*)", url)
        if authority is not None and "@" in authority.group(1):
            raise ValueError(
                "url must not hold credentials (user:password@host): health URLs are printed in logs and "
                "reports; probe an endpoint that needs no login, or one on the cluster network"
            )
        return url

    @field_validator("interval_seconds")
    @classmethod
    def _sensible_interval(cls, seconds: float) -> float:
        if seconds < 0.1:
            raise ValueError(
                f"interval_seconds must be at least 0.1 (seconds between probes), got {seconds:g}: a shorter "
                "interval floods the endpoint"
            )
        return seconds


class GateWindow(_Model):
    """A recurring window: ``deny`` holds promotions while it is open; ``allow`` windows are the only times
    promotions may happen (rules/windows.py has the rules)."""

    allow: Annotated[str | None, Field(min_length=1, max_length=300)] = None
    deny: Annotated[str | None, Field(min_length=1, max_length=300)] = None
    duration: Annotated[str | float, Field(description="how long each window stays open: 90s, 30m, 2h, 3d, 1w")]
    timezone: Annotated[str, Field(min_length=1, max_length=64)] = "UTC"
    name: Annotated[str, Field(max_length=100)] = ""

    @model_validator(mode="after")
    def _one_schedule(self) -> GateWindow:
        if (self.allow is None) == (self.deny is None):
            raise ValueError("a window has exactly one of allow: or deny: (a cron expression or an RRULE)")
        self.window()  # parses the schedule, the duration and the time zone: errors name them
        return self

    def window(self) -> Window:
        schedule = self.allow if self.allow is not None else self.deny
        assert schedule is not None  # one of them, checked above
        try:
            return Window(
                kind="allow" if self.allow is not None else "deny",
                schedule=schedule,
                duration=parse_duration(self.duration),
                timezone=self.timezone,
                name=self.name,
            )
        except WindowError as exc:
            raise ValueError(str(exc)) from None


class Gate(_Model):
    approval: bool = False
    timeout_seconds: Annotated[float, Field(gt=0, le=30 * 86400)] = 3600
    approvers: Annotated[list[ShortText], Field(max_length=100)] = []
    windows: Annotated[list[GateWindow], Field(max_length=20)] = []
    min_soak: Annotated[
        str | float | None,
        Field(description="the candidate must have been verified upstream at least this long ago: 30m, 2h, 1d"),
    ] = None
    when_held: Annotated[
        Literal["fail", "wait"],
        Field(description="a promotion held by a window, the freeze or the soak: fail at once, or wait for it"),
    ] = "fail"
    max_wait: Annotated[str | float, Field(description="with when_held: wait, give up after this long")] = "24h"

    @field_validator("min_soak", "max_wait")
    @classmethod
    def _duration(cls, value: str | float | None) -> str | float | None:
        if value is not None:
            try:
                parse_duration(value)
            except WindowError as exc:
                raise ValueError(str(exc)) from None
        return value

    def soak(self) -> timedelta | None:
        return None if self.min_soak is None else parse_duration(self.min_soak)

    def wait_limit(self) -> timedelta:
        return parse_duration(self.max_wait)

    def schedule(self) -> list[Window]:
        return [w.window() for w in self.windows]


class Write(_Model):
    """How a promotion's change reaches the environment's branch: pushed (the default), or as a pull request
    that a person or a policy merges (docs/pull-requests.md)."""

    mode: Literal["push", "pull-request"] = "push"
    provider: Annotated[
        Literal["gitea", "github", "gitlab"] | None, Field(description="the forge that hosts the repository")
    ] = None
    api_url: Annotated[
        str | None,
        Field(
            max_length=500,
            description="the forge's API root; default: from repository.url (Gitea: https://host/api/v1; GitHub: "
            "https://api.github.com, Enterprise Server: https://host/api/v3; GitLab: https://host/api/v4)",
        ),
    ] = None
    base: Annotated[str | None, Field(description="the branch the pull request merges into (the one written)")] = None
    labels: Annotated[list[ShortText], Field(max_length=20)] = []
    reviewers: Annotated[list[ShortText], Field(max_length=20)] = []
    token: SecretRef | None = Field(
        default=None, description="the forge API token by reference; default: the repository's credentials"
    )
    rollback: Annotated[
        Literal["pull-request", "push"],
        Field(description="a failed promotion is undone through a pull request too, or pushed at once"),
    ] = "pull-request"
    merge_timeout: Annotated[
        str | float, Field(description="how long a pull request may wait for its merge: 90m, 2d, 1w")
    ] = "7d"
    rollback_timeout: Annotated[
        str | float, Field(description="how long a rollback's pull request may wait for its merge")
    ] = "1h"
    branch_prefix: Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")] = (
        "promote"
    )
    auto_merge: Annotated[
        bool,
        Field(
            description="ask the forge to merge the pull request itself once its required checks pass (GitHub "
            "auto-merge, GitLab auto-merge, Gitea's scheduled merge); the run still waits for the merge and "
            "verifies it"
        ),
    ] = False

    @field_validator("merge_timeout", "rollback_timeout")
    @classmethod
    def _duration(cls, value: str | float) -> str | float:
        try:
            seconds = parse_duration(value).total_seconds()
        except WindowError as exc:
            raise ValueError(str(exc)) from None
        if not 60 <= seconds <= 30 * 86400:
            raise ValueError("must be between 1 minute and 30 days")
        return value

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not re.match(r"^https?://[^/@?#\s]+(/[^?#@\s]*)?$", url) or re.search(r"[\x00-\x1f\x7f]", url):
            raise ValueError(
                "must be an http(s) URL without user info, query or fragment, such as https://git.example/api/v1"
            )
        return url

    @field_validator("base")
    @classmethod
    def _base(cls, branch: str | None) -> str | None:
        return None if branch is None else _checked_branch(branch)

    @model_validator(mode="after")
    def _complete(self) -> Write:
        if self.mode == "pull-request" and self.provider is None:
            raise ValueError(
                "mode pull-request needs provider (the forge that hosts the repository: gitea, github, gitlab)"
            )
        if self.mode == "push":
            extra = [
                name
                for name in ("provider", "api_url", "base", "labels", "reviewers", "token", "auto_merge")
                if getattr(self, name) not in (None, [], False)
            ]
            if extra:
                raise ValueError(f"{', '.join(extra)} only apply with mode: pull-request")
        if ".." in self.branch_prefix or self.branch_prefix.endswith(("/", ".", ".lock")):
            raise ValueError("branch_prefix must be a valid start of a branch name (no '..', no trailing '/' or '.')")
        return self

    def merge_seconds(self) -> float:
        return parse_duration(self.merge_timeout).total_seconds()

    def rollback_seconds(self) -> float:
        return parse_duration(self.rollback_timeout).total_seconds()


class Environment(_Model):
    name: Annotated[str, Field(pattern=_ENV_NAME)]
    tracks: Tracking
    verify: Verification = Verification()
    health_checks: list[HealthCheck] = []
    gate: Gate = Gate()
    write: Write = Write()

    @property
    def pull_requests(self) -> bool:
        return self.write.mode == "pull-request"

    def written_branch(self, repository_branch: str) -> str:
        """The branch a promotion of this environment writes (a pull request's base)."""
        tracked = getattr(self.tracks, "branch", None)
        return tracked if self.tracks.kind == "branch" and isinstance(tracked, str) else repository_branch


class Evidence(_Model):
    """Signed evidence (docs/safety.md#evidence-nobody-can-forge): with ``trusted_keys``, a record in
    refs/notes/promote counts only when one of these keys signed it; the workers sign with ``signing_key``."""

    trusted_keys: Annotated[
        list[Annotated[str, Field(max_length=1000)]],
        Field(max_length=20, description="OpenSSH ed25519 public key lines whose signatures count"),
    ] = []
    signing_key: SecretRef | None = Field(
        default=None, description="the ed25519 private key the workers sign new records with (by reference)"
    )

    @field_validator("trusted_keys")
    @classmethod
    def _keys(cls, keys: list[str]) -> list[str]:
        for index, line in enumerate(keys):
            try:
                load_public_key(line)
            except ValueError as exc:
                raise ValueError(f"trusted_keys[{index}]: {exc}") from None
        return keys

    @model_validator(mode="after")
    def _signs_when_it_requires(self) -> Evidence:
        if self.trusted_keys and self.signing_key is None:
            raise ValueError(
                "trusted_keys is set, so records must be signed: set signing_key (env: or secret_block:) to the "
                "private key of one of them, held by the workers"
            )
        return self


class Notifications(_Model):
    webhook_url_env: Annotated[str | None, Field(pattern=_ENV_VAR)] = None


class Pipeline(_Model):
    """One application's promotion from its first environment to its last."""

    name: Annotated[str, Field(pattern=_BLOCK_NAME)]
    repository: Repository
    versioning: Versioning = Versioning()
    environments: Annotated[list[Environment], Field(min_length=1)]
    notifications: Notifications = Notifications()
    evidence: Evidence = Evidence()

    @model_validator(mode="after")
    def _environments(self) -> Pipeline:
        names = [env.name for env in self.environments]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"environment names must be unique; repeated: {', '.join(duplicates)}")
        self._promotable_shape()
        self._holds_where_they_apply()
        self._pull_requests_where_they_can()
        return self

    def _pull_requests_where_they_can(self) -> None:
        """A pull request needs a forge to open it on and a token to open it with, and merges into the branch
        the environment's promotion writes."""
        for env in self.environments:
            write = env.write
            if write.mode != "pull-request":
                continue
            if env is self.entry and len(self.environments) > 1:
                raise ValueError(
                    f"environment {env.name}: it is where promote-rc cuts release candidates, which it writes by "
                    "push; pull requests are for the environments promoted after it (set write.mode there)"
                )
            written = env.written_branch(self.repository.branch)
            if write.base is not None and write.base != written:
                raise ValueError(
                    f"environment {env.name}: write.base is {write.base!r}, but its promotions write branch "
                    f"{written!r}: the pull request must merge into that branch (omit write.base, or fix it)"
                )
            if write.token is None and self.repository.credentials is None:
                raise ValueError(
                    f"environment {env.name}: write.mode pull-request needs a forge token: set write.token (env: or "
                    "secret_block:) or repository.credentials"
                )
            app = self.repository.credentials.github_app if self.repository.credentials else None
            if write.token is None and app is not None and write.provider != "github":
                raise ValueError(
                    f"environment {env.name}: repository.credentials.github_app is a GitHub App, but write.provider "
                    f"is {write.provider}: set write.provider: github, or write.token for that forge"
                )
            # GitLab projects may sit in subgroups: group/subgroup/name.
            path = r"[^/]+(/[^/]+)+?" if write.provider == "gitlab" else r"[^/]+/[^/]+?"
            if write.api_url is None and not re.match(rf"^https?://[^/]+/{path}(\.git)?/?$", self.repository.url):
                raise ValueError(
                    f"environment {env.name}: the forge API cannot be derived from repository.url (it is not "
                    "http(s)://host/owner/name): set write.api_url, such as https://git.example/api/v1"
                )

    def warnings(self) -> list[str]:
        """What is valid but unsafe, for ``promote validate`` to say."""
        gated = [env.name for env in self.environments if env.gate.approval]
        if gated and not self.evidence.trusted_keys:
            return [
                f"{', '.join(gated)} {'is' if len(gated) == 1 else 'are'} gated, but evidence.trusted_keys is not "
                "set: anyone who can push refs/notes/promote can write an approval or a verification that counts. "
                "Set evidence.trusted_keys and evidence.signing_key (docs/safety.md#evidence-nobody-can-forge)"
            ]
        return []

    def _holds_where_they_apply(self) -> None:
        """Windows and the soak time hold promotions *into* an environment from the one before it."""
        for env in self.environments:
            if self.upstream_of(env) is not None or (env is self.last and len(self.environments) == 1):
                if env.gate.min_soak is not None and self.upstream_of(env) is None:
                    raise ValueError(
                        f"environment {env.name}: gate.min_soak needs an environment before it to soak in; "
                        "a single-environment pipeline has none"
                    )
                continue
            if env.gate.windows or env.gate.min_soak is not None:
                raise ValueError(
                    f"environment {env.name}: gate.windows and gate.min_soak apply to environments promoted from "
                    "the one before them; new versions enter this one through promote-rc"
                )

    def _promotable_shape(self) -> None:
        """Refuse chains the flows cannot promote, instead of failing at run time with misleading advice:
        every environment after the entry is promoted from the one before it."""
        entry = self.environments.index(self.entry)
        for upstream, env in zip(self.environments[entry:], self.environments[entry + 1 :], strict=False):
            problem = env.tracks.upstream_problem(env.name, upstream)
            if problem is not None:
                raise ValueError(problem)

    @property
    def entry(self) -> Environment:
        """Where new versions enter (promote-rc): the first environment whose kind cuts release candidates,
        or, in a pipeline without one, the first environment. Environments before it are left alone."""
        return next((env for env in self.environments if env.tracks.cuts_release_candidates), self.environments[0])

    @property
    def last(self) -> Environment:
        """The end of the chain (promote-production)."""
        return self.environments[-1]

    def upstream_of(self, env: Environment) -> Environment | None:
        """The environment ``env`` is promoted from; None for the entry and anything before it."""
        index = self.names.index(env.name)
        return self.environments[index - 1] if index > self.environments.index(self.entry) else None

    def downstream_of(self, env: Environment) -> Environment | None:
        """The environment promoted from ``env`` next; None at the end of the chain."""
        index = self.names.index(env.name)
        return self.environments[index + 1] if index + 1 < len(self.environments) else None

    def environment(self, name: str) -> Environment:
        for env in self.environments:
            if env.name == name:
                return env
        raise KeyError(f"pipeline {self.name!r} has no environment {name!r}; it has: {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        return [env.name for env in self.environments]


# The ``kind`` values of each discriminated union, by the field that holds it (for error messages).
UNION_KINDS: dict[str, set[str]] = {"tracks": _kinds(Tracking), "gitops": _kinds(GitOpsRef)}
