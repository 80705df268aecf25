"""The sync engine: one source's sync from trigger to verdict, and what it reports.

A sync's facts (the source, the credentials, the options, the open client, the account, the
deadline) travel together in a [`SyncContext`][prefect_stitch._engine.context.SyncContext];
what the trigger learnt (the job's name, the baseline listed before we acted, the source's
load records) travels from the trigger step to the wait step in the public
[`StitchSyncHandle`][prefect_stitch.models.StitchSyncHandle]. Nothing is fetched twice.

* `context`: open a sync's context (client, account, global rate limit, deadline).
* `memory`: what a run remembers between Prefect's retries of a task or of the flow run.
* `trigger`: start the job (baseline first, safe retries, a job already running).
* `watch`: follow the account's listings until the job's record (or its log) is final.
* `loads`: follow a successful job's data into the warehouse.
* `conclude`: judge the final record, settle the loads, and report the outcome.
* `outcomes`: the outcome table: log line, event, artifact and typed error of each outcome.
* `steps`: the step bodies the Prefect tasks run, and the internal tasks the flows use.
* `runner`: run a flow's body on a helper thread that the run's cancellation reaches.

Nothing here is public API: the flows, the tasks and the block are.
"""
