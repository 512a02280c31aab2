"""One run of one (connection, entity type), from request to end.

Pipeline: ``runner.run_step`` takes the lease and a slot, asks ``preflight``
(the status endpoint, cached; it learns the connection's upstream id), then
``slice.sync_slice`` pages with ``pager.Pager`` through the guard, splits
each page with ``records`` and commits it with its cursor; ``runner``
concludes the slice (done, hand-over, park, retry, fail). Around it:
``schedule`` (due syncs), ``recovery`` (parked jobs, stalled runs, probes),
``housekeeping`` (the tick's steps), ``retention`` (pruning history),
``poison`` (counting redeliveries of one message).
"""
