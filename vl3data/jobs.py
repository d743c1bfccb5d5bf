"""The data jobs, one explicit list: the CLI makes a subcommand of each, the build graph a node
kind of each. Adding a job means adding it here; nothing registers itself."""

from __future__ import annotations

from curation.curate import CurateJob
from engine.job import Job
from ingest.job import ImportJob
from recaption.job import RecaptionJob
from video_prep.job import VideoJob
from video_prep.raw_job import RawVideoJob

DATA_JOBS: tuple[Job, ...] = (CurateJob(), VideoJob(), RawVideoJob(), RecaptionJob(), ImportJob())


def job_named(name: str) -> Job:
    for job in DATA_JOBS:
        if job.name == name:
            return job
    raise KeyError(f"no data job named {name!r}: {', '.join(j.name for j in DATA_JOBS)}")
