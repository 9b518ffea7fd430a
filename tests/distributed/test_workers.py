"""Distributed mode end to end: `skyfill submit` + `skyfill worker` processes on one Redis,
against the simulated network; a worker SIGKILLed mid-batch, Redis restarted mid-job."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from skyfill.engine.layout import JobLayout
from skyfill.engine.state.redis import RedisStateStore
from skyfill.ratelimit.redis_budget import budget_key
from tests.helpers import (
    CliProcess,
    RedisServer,
    Server,
    all_records,
    assert_one_line_error,
    host_key,
    records_by_did,
    repos,
    run_cli,
    run_job,
    start_cli,
    start_simnet,
    truth_records,
    wait_until,
)

TIMEOUT = 120


def submit(net: Server, redis: RedisServer, workdir: Path | str, job_id: str, *flags: str) -> str:
    done = run_cli(
        "submit",
        "--state",
        redis.url,
        "--dids",
        net.ready["dids"],
        "--workdir",
        str(workdir),
        "--job-id",
        job_id,
        "--plc-url",
        net.ready["plc"],
        "--allow-private-network",
        *flags,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def pds_rate(net: Server, rate: str) -> list[str]:
    """`--hosts` flags holding every PDS host of `net` (not its PLC) to `rate`: a job that
    lasts long enough to act on while it runs, without waiting on the PLC as well."""
    return [flag for url in net.ready["pds"] for flag in ("--hosts", f"{host_key(url)}={rate}")]


def start_workers(redis: RedisServer, job_id: str, count: int, *flags: str) -> list[CliProcess]:
    return [
        start_cli(
            "worker",
            "--state",
            redis.url,
            "--job",
            job_id,
            "--worker-id",
            f"w{i}",
            "--progress",
            "none",
            "--visibility-timeout",
            "3",
            *flags,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]


def wait_all(workers: list, timeout: float = TIMEOUT) -> list[str]:
    """Wait for every worker to exit; returns their stderr."""
    errors = []
    deadline = time.monotonic() + timeout
    for proc in workers:
        try:
            _, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p in workers:
                p.kill()
            pytest.fail(f"workers still running after {timeout}s")
        errors.append(err)
    return errors


def comparable(rows: list[dict]) -> list[tuple]:
    return [tuple(v for k, v in sorted(r.items()) if k != "job_id") for r in rows]


def test_four_workers_one_killed_mid_batch_equals_one_machine(
    network: Server, redis_server: RedisServer, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    # 12 requests/s per PDS host shared by all workers: the job lasts long enough to kill one
    submit(network, redis_server, shared, "dist", "--batch-size", "8", *pds_rate(network, "12/1s"))
    store = RedisStateStore.from_url(redis_server.url, "dist")
    workers = start_workers(redis_server, "dist", 4)

    def running_tasks(worker: dict) -> list[str]:
        return [t for t in worker.get("tasks", []) if str(store.task(t).status) == "running"]

    def victim_mid_batch() -> dict | None:
        if store.status_counts().get("ok", 0) < 10:
            return None
        return next((w for w in store.workers() if running_tasks(w)), None)

    # killed the moment it is seen holding a batch: it has no time to finish it
    victim = wait_until(victim_mid_batch, what="a worker holding a batch")
    killed = workers[int(victim["worker_id"][1:])]
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=10)  # dead before we look: it can finish nothing from here on
    # Held unfinished: not done, and its work not complete either (a task whose `.done`
    # marker the victim wrote before dying is only recorded by the next owner, not redone).
    layout = JobLayout(shared, "dist")
    held = [
        t
        for t in running_tasks(victim)
        if str(store.task(t).status) != "done" and not layout.task_done(t).exists()
    ]
    assert held, "the victim should die holding an unfinished batch"
    errors = wait_all(workers)

    job = store.job()
    assert job is not None and str(job.status) == "completed", errors
    counts = store.status_counts()
    assert "pending" not in counts and sum(counts.values()) == job.item_count == 120
    # the batches the dead worker held unfinished were finished by others (claimed twice)
    infos = {t: store.task_info(t) for t in held}
    assert all(i["attempts"] >= 2 for i in infos.values()), (victim, killed.returncode, infos)
    assert store.task_status_counts() == {"done": len(store.tasks())}

    # the same DIDs on one machine give the same dataset
    local = run_job(network, tmp_path / "local", "local")
    assert local.returncode == 0, local.stderr
    dist_rows = all_records(shared, "dist")
    keys = [(r["did"], r["collection"], r["rkey"]) for r in dist_rows]
    assert len(keys) == len(set(keys)), "a record appears twice"
    assert comparable(dist_rows) == comparable(all_records(tmp_path / "local", "local"))
    truth = truth_records(network.ready["truth_data"])
    got = records_by_did(shared, "dist")
    assert {d: got.get(d, set()) for d in truth} == truth
    dist_repos, local_repos = repos(shared, "dist"), repos(tmp_path / "local", "local")
    assert {d: r["status"] for d, r in dist_repos.items()} == {
        d: r["status"] for d, r in local_repos.items()
    }
    store.close()


def test_redis_restart_with_aof_mid_job(
    network: Server, redis_server: RedisServer, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    submit(
        network, redis_server, shared, "restart", "--batch-size", "8", *pds_rate(network, "12/1s")
    )
    store = RedisStateStore.from_url(redis_server.url, "restart")
    workers = start_workers(redis_server, "restart", 2)
    wait_until(lambda: store.status_counts().get("ok", 0) >= 15, what="15 DIDs done")
    store.close()
    redis_server.kill()
    # An outage, not a wait for something: 2 s is two of a worker's heartbeats (every 1 s
    # at --visibility-timeout 3), so each of them meets it; nothing below depends on how
    # long it really lasted.
    time.sleep(2)
    redis_server.start()  # same port, same data directory: the AOF is replayed
    errors = wait_all(workers)

    store = RedisStateStore.from_url(redis_server.url, "restart")
    job = store.job()
    assert job is not None and str(job.status) == "completed", errors
    assert "pending" not in store.status_counts()
    truth = truth_records(network.ready["truth_data"])
    got = records_by_did(shared, "restart")
    assert {d: got.get(d, set()) for d in truth} == truth
    rows = all_records(shared, "restart")
    assert len({(r["did"], r["collection"], r["rkey"]) for r in rows}) == len(rows)
    store.close()


@pytest.mark.parametrize("fetch_processes", ["0", "1"])
def test_workers_share_one_host_budget(
    network: Server, redis_server: RedisServer, tmp_path: Path, fetch_processes: str
) -> None:
    """With fetch processes, each worker's child leases from the same budget in Redis (a
    child with a bucket of its own would let 4 x 6 through)."""
    rate = 6
    pds = network.ready["pds"][0].removeprefix("http://")
    submit(
        network,
        redis_server,
        tmp_path / "shared",
        "budget",
        "--batch-size",
        "5",
        "--hosts",
        f"{pds}={rate}/1s",
        "--fetch-processes",
        fetch_processes,
    )
    arrivals = _json(network.ready["pds"][0] + "/_simnet/arrivals").get("0", [])
    before = len(arrivals)  # the package's network served other tests' jobs too
    wait_all(start_workers(redis_server, "budget", 4))
    arrivals = _json(network.ready["pds"][0] + "/_simnet/arrivals")["0"]
    mine = sorted(arrivals[before:])
    assert len(mine) >= 40  # this job's getRepo requests to host 0
    # The budget counts slots when Redis grants them; requests reach the host a little
    # later, by however long this machine takes to send them. So the bounds are loose
    # where a loaded machine could bunch arrivals, yet far from what four workers with a
    # bucket each (4 x 6 = 24 a second) would do.
    busiest = max(sum(1 for u in mine if t <= u < t + 1.0) for t in mine)
    assert busiest <= 2 * rate, f"{busiest} requests to host 0 within one second"
    # A lower bound on time is safe on a loaded machine (it only takes longer): at 6 a
    # second shared, the requests after the first two seconds' worth take a second per 6.
    span = mine[-1] - mine[0]
    assert span >= (len(mine) - 2 * rate) / rate, f"{len(mine)} requests in {span:.1f} s"


def test_fetch_processes_give_back_what_they_leased_between_batches(
    network: Server, redis_server: RedisServer, tmp_path: Path
) -> None:
    """The PLC allows exactly one resolution per DID an hour, shared by two workers whose
    fetch processes lease slots in blocks. A child's loop stops between batches, and with
    it the return of idle slots: unless the child gives back what it leased and did not
    spend as each batch ends, the other worker can wait the hour for the last resolutions
    (whether it does depends on which batch ends last); what is left counted in the budget
    after the job says so every time."""
    plc = host_key(network.ready["plc"])
    dids = len(Path(network.ready["dids"]).read_text().split())
    flags = ("--batch-size", "10", "--fetch-processes", "1", "--hosts", f"{plc}={dids}/1h")
    submit(network, redis_server, tmp_path / "shared", "lease", *flags)
    errors = wait_all(start_workers(redis_server, "lease", 2), timeout=90)
    store = RedisStateStore.from_url(redis_server.url, "lease")
    job = store.job()
    assert job is not None and str(job.status) == "completed", errors
    assert sum(store.status_counts().values()) == job.item_count == dids
    truth = truth_records(network.ready["truth_data"])
    got = records_by_did(tmp_path / "shared", "lease")
    assert {d: got.get(d, set()) for d in truth} == truth
    store.close()
    # one resolution per DID spent; nothing leased and left unspent
    counted = redis.Redis.from_url(redis_server.url).zcard(budget_key(plc))
    assert counted == dids


def test_workers_started_before_the_job_wait_for_it(
    network: Server, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Workers may start before `skyfill submit` ends (a batch scheduler starts them all at
    once): with --wait-for-job one waits for its job, one (--exit-when-idle) for any job;
    both serve it to the end, and the output is exact. A job that never comes ends the
    wait with one line."""
    early = [
        *start_workers(redis_server, "late", 1, "--wait-for-job", "60"),
        start_cli(
            "worker",
            "--state",
            redis_server.url,
            "--exit-when-idle",
            "--wait-for-job",
            "60",
            "--worker-id",
            "any",
            "--progress",
            "none",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
    ]
    time.sleep(1.0)  # both are waiting: neither has given up
    assert all(proc.poll() is None for proc in early)
    submit(network, redis_server, tmp_path / "shared", "late")
    errors = wait_all(early)
    assert [proc.returncode for proc in early] == [0, 0], errors
    store = RedisStateStore.from_url(redis_server.url, "late")
    job = store.job()
    assert job is not None and str(job.status) == "completed", errors
    store.close()
    truth = truth_records(network.ready["truth_data"])
    got = records_by_did(tmp_path / "shared", "late")
    assert {d: got.get(d, set()) for d in truth} == truth
    never = run_cli(
        "worker", "--state", redis_server.url, "--job", "never", "--wait-for-job", "0.3"
    )
    assert_one_line_error(never, 2, "no job never")
    assert "waited" in never.stderr


def test_enqueue_adds_new_dids_only(
    network: Server, redis_server: RedisServer, tmp_path: Path
) -> None:
    dids = Path(network.ready["dids"]).read_text().split()
    first = tmp_path / "first.txt"
    first.write_text("\n".join(dids[:20]) + "\n")
    done = run_cli(
        "submit",
        "--state",
        redis_server.url,
        "--dids",
        str(first),
        "--workdir",
        str(tmp_path / "shared"),
        "--job-id",
        "grow",
        "--plc-url",
        network.ready["plc"],
        "--allow-private-network",
    )
    assert done.returncode == 0, done.stderr
    added = run_cli("enqueue", "grow", *dids[15:30], "--state", redis_server.url)
    assert added.returncode == 0, added.stderr
    assert "added 10 DIDs" in added.stdout and "(5 already in the job)" in added.stdout
    wait_all(start_workers(redis_server, "grow", 2))
    assert set(repos(tmp_path / "shared", "grow")) == set(dids[:30])
    late = run_cli("enqueue", "grow", dids[40], "--state", redis_server.url)
    assert_one_line_error(late, 2, "takes no more DIDs")
    bad = run_cli("enqueue", "grow", "not-a-did", "--state", redis_server.url)
    assert_one_line_error(bad, 2, "not-a-did")


def test_status_and_bad_state_url(
    network: Server, redis_server: RedisServer, tmp_path: Path
) -> None:
    missing = run_cli("status", "nojob", "--state", redis_server.url)
    assert_one_line_error(missing, 2, "no job nojob")
    down = run_cli("worker", "--state", "redis://127.0.0.1:1/0", "--exit-when-idle")
    assert_one_line_error(down, 2, "cannot reach Redis")
    wrong = run_cli("status", "x", "--state", "http://127.0.0.1:1/")
    assert_one_line_error(wrong, 2, "expected a redis://")


def _json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_retry_phase_is_planned_once_by_the_workers(tmp_path: Path) -> None:
    """A DID that fails with a retryable error is retried in retry phases, each planned by
    whichever worker finishes the previous phase first, exactly once."""
    net = start_simnet(tmp_path / "net", accounts=30, hosts=2, mean_records=10, faults="flaky_503")
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        flags = ("--batch-size", "5", "--attempts", "1", "--retry-backoff", "0.5")
        submit(net, redis, tmp_path / "shared", "again", *flags)
        errors = wait_all(start_workers(redis, "again", 3))
        store = RedisStateStore.from_url(redis.url, "again")
        job = store.job()
        assert job is not None and str(job.status) == "completed", errors
        # the fault answers 503 twice: retry_1 fails again, retry_2 succeeds; each phase
        # was planned once (one task each), and no retry_3
        for phase in ("retry_1", "retry_2"):
            tasks = store.tasks(phase)
            assert [str(t.status) for t in tasks] == ["done"], phase
        assert store.tasks("retry_3") == []
        assert store.status_counts() == {"ok": 30}
        store.close()
        # seen from another terminal: every worker, and a report from Redis
        shown = run_cli("monitor", "again", "--state", redis.url, "--once", "--json")
        assert shown.returncode == 0, shown.stderr
        facts = json.loads(shown.stdout)
        assert facts["distributed"] and facts["done"] == 30
        assert {w["worker_id"] for w in facts["workers"]} == {"w0", "w1", "w2"}
        assert not any(w["live"] for w in facts["workers"])  # all stopped
        report = run_cli(
            "report", "again", "--state", redis.url, "--format", "json", "--output", "-"
        )
        assert report.returncode == 0, report.stderr
        assert json.loads(report.stdout)["job"]["job_id"] == "again"
    finally:
        redis.stop()
        net.stop()


def test_pause_then_resume_distributed(
    network: Server, redis_server: RedisServer, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    submit(network, redis_server, shared, "halt", "--batch-size", "8", "--rate-limit", "15/1s")
    store = RedisStateStore.from_url(redis_server.url, "halt")
    workers = start_workers(redis_server, "halt", 2)
    wait_until(lambda: store.status_counts().get("ok", 0) >= 10, what="10 DIDs done")
    paused = run_cli("pause", "halt", "--state", redis_server.url)
    assert paused.returncode == 0, paused.stderr
    wait_all(workers, timeout=60)  # both workers stop on their own
    job = store.job()
    assert job is not None and str(job.status) == "paused"
    assert store.status_counts().get("pending", 0) > 0, "paused before the end"
    resumed = run_cli("resume", "halt", "--state", redis_server.url, "--progress", "none")
    assert resumed.returncode == 0, resumed.stderr
    job = store.job()
    assert job is not None and str(job.status) == "completed"
    truth = truth_records(network.ready["truth_data"])
    got = records_by_did(shared, "halt")
    assert {d: got.get(d, set()) for d in truth} == truth
    rows = all_records(shared, "halt")
    assert len({(r["did"], r["collection"], r["rkey"]) for r in rows}) == len(rows)
    store.close()


def test_workers_fetch_while_one_of_them_lists_the_hosts(
    network: Server, redis_server: RedisServer, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    hosts = [arg for url in network.ready["pds"] for arg in ("--from-host", url)]
    done = run_cli(
        "submit", "--state", redis_server.url, "--workdir", str(shared), "--job-id", "listed",
        "--plc-url", network.ready["plc"], "--allow-private-network", *hosts,
        "--list-limit", "10", "--batch-size", "8",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    errors = wait_all(start_workers(redis_server, "listed", 3))
    store = RedisStateStore.from_url(redis_server.url, "listed")
    job = store.job()
    assert job is not None and str(job.status) == "completed", errors
    truth = network.ready["truth_data"]["repos"]
    listed = {d for d, r in truth.items() if r["status"] in ("ok", "deactivated")}
    assert set(repos(shared, "listed")) == listed and job.item_count == len(listed)
    state = store.get_stats("discovery")
    assert state["done"] and all(h["done"] for h in state["position"].values())
    store.close()
