"""The reference's quickstart, unchanged except for its host: Local()
here, where the reference had AllocEC2Instance() (Ssh(["user@host"])
works too)."""

import asyncio

import meadowrun


def estimate_pi(samples):
    import random

    inside = sum(random.random() ** 2 + random.random() ** 2 <= 1 for _ in range(samples))
    return 4 * inside / samples


async def main():
    host = meadowrun.Local()
    resources = meadowrun.Resources(logical_cpu=1, memory_gb=0.5, max_eviction_rate=80)

    # A lambda runs on a worker; its result comes back.
    print(await meadowrun.run_function(lambda: sum(range(1000)), host, resources))

    # A map, two tasks at a time, results in the order of the arguments.
    estimates = await meadowrun.run_map(estimate_pi, [100_000] * 4, host, resources, num_concurrent_tasks=2)
    print("pi is about", round(sum(estimates) / len(estimates), 2))

    # A command; its output streams here.
    job = await meadowrun.run_command("python3 -c 'import sys; print(sys.version_info[:2])'", host, resources)
    print("exit code", job.return_code)

    # A task's exception comes back with its type and remote traceback.
    try:
        await meadowrun.run_function(lambda: {}["missing"], host, resources)
    except meadowrun.TaskException as e:
        print("remote", e.exc_type, e.message)


if __name__ == "__main__":
    asyncio.run(main())
