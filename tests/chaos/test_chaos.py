"""The short fault schedule set (issue 18), for tests/run: one schedule per fault kind and one
that mixes them, each against the real binary with the native workload and confluent-kafka and
kafka-python clients side by side, every history checked by `sluice verify check`; and proof
that the check fails when an acknowledged record goes missing from a real history.

The long set is chaos/run (results in docs/reliability.md). A failing schedule prints its seed:
rerun it with `tests/chaos/harness.py run --seed N`."""

import json
import os
import subprocess
from pathlib import Path

import pytest

import harness

SECONDS = float(os.environ.get("SLUICE_CHAOS_SECONDS", "8"))
# kinds_for(seed) = CYCLE[seed % 5]: these seeds are a kill, pause, diskfull, cut and mixed
# schedule, as the same seeds are in chaos/run.
SEEDS = {"kill": 1000, "pause": 1001, "diskfull": 1002, "cut": 1003, "mixed": 1004}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    done = {}

    def run(name):
        if name not in done:
            seed = SEEDS[name]
            assert harness.kinds_for(seed) == (harness.KINDS if name == "mixed" else (name,))
            seconds = SECONDS + 4 if name == "mixed" else SECONDS
            done[name] = harness.run_schedule(seed, seconds, harness.kinds_for(seed),
                                              workdir=tmp_path_factory.mktemp(name), keep=True)
        return done[name]

    return run


def explain(r) -> str:
    counts = harness.top_level(r["check"])
    return (f"seed {r['seed']} ({r['label']}) failed: rerun with {harness.rerun(r['seed'], r['seconds'], r['kinds'], r.get('nodes', 1))}"
            f"\nproblems: {r['problems']}\n"
            f"check: {json.dumps(counts)}\nwork dir (broker and client logs, histories): {r['workdir']}")


@pytest.mark.parametrize("name", list(SEEDS))
def test_a_schedule_loses_duplicates_and_reorders_nothing(runs, name):
    r = runs(name)
    if r["passed"] is None:
        pytest.skip(f"{name}: cannot run here: {r['skipped']}")
    assert r["passed"], explain(r)
    ran = [k for k in r["kinds"] if k not in r["skipped"]]
    assert sum(r["injected"][k] for k in ran) >= 1, f"no fault was injected: {r}"
    for k in ran if name != "mixed" else ():
        assert r["injected"][k] >= 1, f"no {k} fault was injected: {r}"


def test_a_cluster_with_kills_loses_duplicates_and_reorders_nothing(tmp_path):
    """Three combined nodes as one cluster (one replica per partition): SIGKILL of the active
    controller, then of node 2 (seed 1020's schedule at 8 s), every history checked. Stricter
    than the single-node schedules: every client must also reach the end offsets, which
    kafka-python does only if the brokers answer OffsetForLeaderEpoch (it checks its position
    with it when a restart moves the partition's leader epoch)."""
    seed = 1020
    assert harness.kinds_for(seed) == ("kill",)
    r = harness.run_schedule(seed, SECONDS, ("kill",), workdir=tmp_path, keep=True, nodes=3)
    assert r["passed"], explain(r)
    assert r["injected"]["kill"] >= 1, f"no kill was injected: {r}"
    assert r.get("controller_faults", 0) >= 1, f"the active controller was not killed: {r}"
    assert not r["problems"], explain(r)


def load(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def check(paths):
    p = subprocess.run([str(harness.BINARY), "verify", "check", *map(str, paths), "-o", "json"],
                       capture_output=True, text=True, timeout=120)
    return p.returncode, json.loads(p.stdout)


def test_the_check_fails_when_the_reads_of_an_acknowledged_record_are_dropped(runs, tmp_path):
    r = runs("kill")
    histories = sorted(Path(r["workdir"]).glob("*.jsonl"))
    assert histories, explain(r)
    code, counts = check(histories)
    assert code == 0 and counts["lost"] == 0, explain(r)

    events = [e for h in histories for e in load(h)]
    acked = {e["value"]: (e["partition"], e["offset"]) for e in events if e["type"] == "produce" and e["outcome"] == "ok"}
    reads = {}
    furthest = {}
    for e in events:
        if e["type"] == "read":
            reads.setdefault(e["value"], []).append(e)
            furthest[e["partition"]] = max(furthest.get(e["partition"], -1), e["offset"])
    # An acknowledged record that was read, below a later offset of its partition that was read
    # too: with its reads gone, it is acknowledged, unread, and read past.
    victim = next(
        (v for v, (p, o) in sorted(acked.items(), key=lambda kv: kv[1]) if v in reads and o < furthest[p] - 1),
        None,
    )
    assert victim is not None, "no acknowledged record was read past in this history"
    dropped = 0
    edited = []
    for h in histories:
        keep = []
        for line in h.read_text().splitlines():
            e = json.loads(line) if line.strip() else None
            if e and e["type"] == "read" and e["value"] == victim:
                dropped += 1
                continue
            keep.append(line)
        out = tmp_path / h.name
        out.write_text("\n".join(keep) + "\n")
        edited.append(out)
    assert dropped == len(reads[victim]) >= 1
    code, counts = check(edited)
    assert code == 1, f"the check passed a history missing every read of acknowledged {victim}: {counts}"
    assert counts["lost"] == 1, counts
    for k in ("unexpected", "duplicated", "inconsistent_offsets", "order_violations", "non_monotonic", "committed_regressions"):
        assert counts[k] == 0, (k, counts)
