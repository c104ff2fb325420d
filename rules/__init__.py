"""The floor: the pure rules every other package stands on, importing nothing else of the project.

Ref and branch names (Git's check-ref-format), versions and tag schemes (semver), time windows and durations,
YAML paths and byte-preserving YAML edits, Flux's commit templates, the readiness rules ported from Argo CD,
Flux and kstatus, evidence signatures, the data of a setter write, and the error tree. ``pipeline/`` (the
pipeline model) imports only this package; ``tests/test_architecture.py`` checks both.
"""
