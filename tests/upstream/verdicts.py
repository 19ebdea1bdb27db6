#!/usr/bin/env python3
"""Derive a scenario's expected verdicts from what the upstream controller did.

Usage: verdicts.py RAW_SCENARIO_DIR > <scenario>.expect.json

Reads only ground truth written by tests/upstream/record.sh, never our exporter's output:
  agentruns.jsonl, jobs.jsonl   kubectl get --watch --output-watch-events -o json, one event
                                per line, plus "observedAt" (when the harness saw it)
  actions.log                   what the harness did (e.g. "delete Job X"), with times
  meta.env, description.txt     scenario name, upstream commit, Bun version, description

Definitions (tests/upstream/README.md has the long form):
  collected        the controller wrote a status that consumed this Job: a terminal run phase
                   with runtimeRef naming it (job runtime), or the step / loop iteration naming
                   it in jobRef leaving Running (Succeeded, Failed, Retrying, or the iteration
                   Succeeded/Failed), except when the step moved on because it timed out.
  collect_outcome  succeeded | failed | cancelled (from that write), missing (that write found
                   the Job gone: JobMissing / "Job missing..."), abandoned (timed out: the
                   step moved on without reading the Job), null (never).
  deleted          ttl (the TTL controller: the Job had a TTL, was finished, its deletion began
                   at or after finish + TTL, with foreground propagation), with_run (the
                   AgentRun was being deleted when the Job's deletion began), other (the harness
                   or anything else), null (still there at the end).
  margin_sign      sign of TTL - (collection time - Job finish time); collection time is the
                   collecting write's status.updatedAt, finish time the Job's completionTime
                   (or the Failed condition's lastTransitionTime); null without TTL or collection.
"""

import json
import os
import re
import sys
from datetime import datetime, timezone

RUN_LABEL = "agents.proompteng.ai/agent-run"
TERMINAL = {"Succeeded", "Failed", "Cancelled"}


def parse_ts(value):
    if not value:
        return None
    v = value.replace("Z", "+00:00")
    return datetime.fromisoformat(v).timestamp()


def load_events(path):
    events = []
    if not os.path.exists(path):
        return events
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            ev = json.loads(line)
            events.append(ev)
    return events


def warn(msg):
    print(f"verdicts: {msg}", file=sys.stderr)


def meta(raw):
    out = {}
    with open(os.path.join(raw, "meta.env")) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                out[k] = v
    return out


def harness_deleted_jobs(raw):
    """Job names the harness deleted itself (actions.log lines 'delete Job NAME') -> time."""
    names = {}
    path = os.path.join(raw, "actions.log")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                m = re.search(r"^(\S+) delete Job (\S+)", line)
                if m:
                    names.setdefault(m.group(2), parse_ts(m.group(1)))
    return names


def job_finish(job):
    st = job.get("status") or {}
    for c in st.get("conditions") or []:
        if c.get("status") == "True" and c.get("type") in ("Complete", "SuccessCriteriaMet"):
            return parse_ts(st.get("completionTime") or c.get("lastTransitionTime"))
    for c in st.get("conditions") or []:
        if c.get("status") == "True" and c.get("type") in ("Failed", "FailureTarget"):
            return parse_ts(c.get("lastTransitionTime"))
    return None


def main():
    raw = sys.argv[1]
    m = meta(raw)
    runs_ev = load_events(os.path.join(raw, "agentruns.jsonl"))
    jobs_ev = load_events(os.path.join(raw, "jobs.jsonl"))
    harness_deleted = harness_deleted_jobs(raw)
    description = ""
    dpath = os.path.join(raw, "description.txt")
    if os.path.exists(dpath):
        with open(dpath) as f:
            description = " ".join(f.read().split())

    # --- AgentRun histories ---------------------------------------------------------
    run_hist = {}
    run_order = []
    for ev in runs_ev:
        obj = ev.get("object") or {}
        name = (obj.get("metadata") or {}).get("name")
        if not name:
            continue
        if name not in run_hist:
            run_hist[name] = []
            run_order.append(name)
        run_hist[name].append(ev)

    # --- Job histories --------------------------------------------------------------
    job_hist = {}
    job_order = []
    for ev in jobs_ev:
        obj = ev.get("object") or {}
        name = (obj.get("metadata") or {}).get("name")
        if not name:
            continue
        if name not in job_hist:
            job_hist[name] = []
            job_order.append(name)
        job_hist[name].append(ev)

    runs_out = []
    for run in run_order:
        hist = run_hist[run]
        objs = [e["object"] for e in hist]
        first = objs[0]
        ns = first["metadata"]["namespace"]
        runtime = ((first.get("spec") or {}).get("runtime") or {}).get("type")
        deleted_ev = next((e for e in hist if e.get("type") == "DELETED"), None)
        run_deleting_at = None
        for e in hist:
            dt = (e["object"].get("metadata") or {}).get("deletionTimestamp")
            if dt:
                run_deleting_at = parse_ts(e["observedAt"])
                break
        if run_deleting_at is None and deleted_ev is not None:
            run_deleting_at = parse_ts(deleted_ev["observedAt"])

        last_phase = None
        last_reason = None
        for o in objs:
            st = o.get("status") or {}
            if st.get("phase"):
                last_phase = st.get("phase")
                last_reason = st.get("reason")
        if last_phase in TERMINAL:
            outcome = last_phase.lower()
        elif deleted_ev is not None:
            outcome = "deleted"
        else:
            outcome = (last_phase or "pending").lower()
        reason = last_reason if last_phase in TERMINAL else None

        steps_out = []
        if runtime == "workflow":
            spec_steps = ((first.get("spec") or {}).get("workflow") or {}).get("steps") or []
            for i, s in enumerate(spec_steps):
                started = None
                for o in objs:
                    wsteps = ((o.get("status") or {}).get("workflow") or {}).get("steps") or []
                    if i < len(wsteps) and wsteps[i].get("startedAt"):
                        started = wsteps[i]["startedAt"]
                        break
                steps_out.append({"index": i + 1, "name": s.get("name"), "started_at": started})

        # Collection writes, per Job name: the first status write that consumed it.
        collections = {}  # job -> (outcome, time, attempt)
        attempts = {}  # job -> attempt from status
        for e in hist:
            o = e["object"]
            st = o.get("status") or {}
            t = parse_ts(st.get("updatedAt")) or parse_ts(e.get("observedAt"))
            if e.get("type") == "DELETED":
                continue
            if runtime == "job":
                rr = st.get("runtimeRef") or {}
                jn = rr.get("name")
                if jn:
                    attempts.setdefault(jn, 1)
                if jn and st.get("phase") in TERMINAL and jn not in collections:
                    oc = "missing" if st.get("reason") == "JobMissing" else st["phase"].lower()
                    collections[jn] = (oc, t)
                continue
            wsteps = ((st.get("workflow") or {}).get("steps")) or []
            for s in wsteps:
                ref = (s.get("jobRef") or {}).get("name")
                if ref:
                    attempts.setdefault(ref, s.get("attempt"))
                phase = s.get("phase")
                msg = s.get("message") or ""
                if ref and ref not in collections and phase in ("Succeeded", "Failed", "Retrying"):
                    # A step message survives later writes (JSON merge patch), so it only
                    # tells the cause of a Retrying/Failed write, which always sets it.
                    if phase == "Succeeded":
                        oc = "succeeded"
                    elif msg.startswith("Job missing"):
                        oc = "missing"
                    elif msg.startswith("Step timed out"):
                        oc = "abandoned"
                    else:
                        oc = "failed"
                    collections[ref] = (oc, t)
                loop = s.get("loop") or {}
                for it in loop.get("iterations") or []:
                    iref = (it.get("jobRef") or {}).get("name")
                    if iref:
                        attempts.setdefault(iref, it.get("attempts"))
                    if iref and iref not in collections and it.get("phase") in ("Succeeded", "Failed"):
                        imsg = it.get("message") or ""
                        if it.get("phase") == "Succeeded":
                            oc = "succeeded"
                        elif imsg.startswith("Job missing"):
                            oc = "missing"
                        elif imsg.startswith("Step timed out"):
                            oc = "abandoned"
                        else:
                            oc = it["phase"].lower()
                        collections[iref] = (oc, t)

        jobs_out = []
        for jn in job_order:
            jh = job_hist[jn]
            jobj = jh[0]["object"]
            labels = (jobj.get("metadata") or {}).get("labels") or {}
            if labels.get(RUN_LABEL) != run:
                continue
            last = [e["object"] for e in jh if e.get("type") != "DELETED"] or [jh[-1]["object"]]
            final = jh[-1]["object"]
            ttl = (final.get("spec") or {}).get("ttlSecondsAfterFinished")
            finish = None
            for o in [e["object"] for e in jh]:
                finish = job_finish(o) or finish
            step = labels.get("agents.proompteng.ai/step-index")
            it = labels.get("agents.proompteng.ai/step-iteration")
            mname = re.search(r"-attempt-(\d+)$", jn)
            attempt = int(mname.group(1)) if mname else attempts.get(jn)
            if mname and attempts.get(jn) not in (None, attempt):
                warn(f"{jn}: attempt {attempt} from its name, {attempts.get(jn)} from the status")

            deleted_ev_j = next((e for e in jh if e.get("type") == "DELETED"), None)
            del_start = None
            foreground = False
            for e in jh:
                md = e["object"].get("metadata") or {}
                if md.get("deletionTimestamp"):
                    # deletionTimestamp has second precision; when the harness saw it is
                    # precise to a few ms (same host clock as the controller's updatedAt).
                    del_start = parse_ts(e["observedAt"])
                    foreground = "foregroundDeletion" in (md.get("finalizers") or [])
                    break
            if del_start is None and deleted_ev_j is not None:
                del_start = parse_ts(deleted_ev_j["observedAt"])
            if jn in harness_deleted and del_start is not None:
                # The harness's delete request is when the deletion began.
                del_start = min(del_start, harness_deleted[jn])
            deleted = None
            if deleted_ev_j is not None or del_start is not None:
                if jn in harness_deleted:
                    deleted = "other"
                elif run_deleting_at is not None and run_deleting_at <= del_start + 0.5:
                    deleted = "with_run"
                elif ttl is not None and finish is not None and del_start >= finish + ttl - 1 and foreground:
                    deleted = "ttl"
                else:
                    deleted = "other"
            if deleted_ev_j is None and del_start is not None:
                warn(f"{jn}: deletion started but no DELETED event seen")

            coll = collections.get(jn)
            if coll is not None and coll[0] == "abandoned":
                collected = False
                collect_outcome = "abandoned"
                ctime = None
            elif coll is not None:
                collected = True
                collect_outcome = coll[0]
                ctime = coll[1]
            else:
                collected = False
                collect_outcome = None
                ctime = None
            if collect_outcome == "missing" and (del_start is None or (ctime is not None and del_start > ctime)):
                warn(f"{jn}: collected as missing but not deleted before the write")
            if collected and collect_outcome != "missing" and finish is None:
                warn(f"{jn}: collected ({collect_outcome}) but never seen finished")
            if collect_outcome == "missing":
                deleted_before = True
            elif del_start is not None:
                deleted_before = ctime is None or del_start < ctime
                if collect_outcome == "abandoned":
                    deleted_before = True
            else:
                deleted_before = False
            margin = None
            if ttl is not None and collected and ctime is not None and finish is not None:
                value = ttl - (ctime - finish)
                margin = "positive" if value >= 0 else "negative"
            jobs_out.append(
                {
                    "name": jn,
                    "step": int(step) if step else None,
                    "iteration": int(it) if it else None,
                    "attempt": attempt,
                    "collected": collected,
                    "collect_outcome": collect_outcome,
                    "deleted": deleted,
                    "deleted_before_collection": deleted_before,
                    "ttl": ttl,
                    "margin_sign": margin,
                }
            )

        run_out = {
            "namespace": ns,
            "name": run,
            "runtime": runtime,
            "outcome": outcome,
            "reason": reason,
        }
        run_out["steps"] = steps_out
        run_out["jobs"] = jobs_out
        runs_out.append(run_out)

    out = {
        "scenario": m.get("scenario"),
        "upstream_commit": m.get("upstream_commit"),
        "bun": m.get("bun"),
        "description": description,
        "runs": runs_out,
    }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
