"""Maps as the reference runs them, on this engine: results as tasks
complete with failed tasks retried, run_map naming the tasks that failed,
and a fire-and-forget map whose results any process collects by its id.
Written against the reference's API; only the host is new (Local())."""

import asyncio
import os
import tempfile

import meadowrun


async def main():
    host = meadowrun.Local()
    marks = tempfile.mkdtemp()

    def flaky(x):
        # Odd inputs fail on their first attempt (a file marks the try).
        mark = os.path.join(marks, str(x))
        if x % 2 and not os.path.exists(mark):
            open(mark, "w").close()
            raise ConnectionError("task for %d: first try fails" % x)
        return x * x

    # Results as the tasks complete; the engine retries the failed ones.
    async for r in meadowrun.run_map_as_completed(flaky, [1, 2, 3, 4], host, num_concurrent_tasks=4, max_num_task_attempts=2):
        print("task %d: %r (attempt %d)" % (r.task_id, r.result_or_raise(), r.attempt))

    # run_map raises after every task ended, naming the failed ones.
    try:
        await meadowrun.run_map(lambda x: 10 // x, [5, 0, 2], host)
    except meadowrun.RunMapTasksFailedException as e:
        for t in e.failed_tasks:
            print("failed: task %d raised %s: %s" % (t.task_id, t.exception[0], t.exception[1]))

    # Fire and forget: the job runs on; any process attaches by its id.
    job = await meadowrun.run_map(lambda x: x + 1, [1, 2, 3], host, wait_for_result=False)
    print("detached job's results:", await meadowrun.Job(job.job_id).results())


if __name__ == "__main__":
    asyncio.run(main())
