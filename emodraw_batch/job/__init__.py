"""The job: validate, plan once, label every shard, finish; resumable and safe to rerun.

    validate.py     every check before a run, no side effects -> Job
    plan.py         claim the output, find finished shards -> Plan
    resume.py       what "the same job" is, which shard outputs are complete
    runner.py       label_windows (the pipelined loop), label_shard, finish (manifest, statistics), run (without Prefect)
    api.py          the Python API: classify (in memory), run (settings by name)
    prefetch.py     overlap reading/tokenizing and writing with the model

Imports everything below it (base, inference, files, analysis); emodraw_flows/ orchestrates these steps.
"""
