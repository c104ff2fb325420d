"""The pipeline file: its schema (:mod:`pipeline.model`) and its loader (:mod:`pipeline.load`)."""
