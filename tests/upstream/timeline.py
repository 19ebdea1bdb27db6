#!/usr/bin/env python3
"""Print a raw capture as one merged timeline, to write a scenario's description by hand.

Usage: timeline.py RAW_SCENARIO_DIR

One line per watch event (AgentRuns, Jobs, Pods, ordered by observedAt) with the fields
that matter, plus the harness's actions and the controller's reconcile decisions.
"""

import json
import os
import re
import sys


def load(path, kind):
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            if line.strip():
                ev = json.loads(line)
                out.append((ev.get("observedAt", ""), kind, ev))
    return out


def run_line(ev):
    o = ev["object"]
    md = o.get("metadata") or {}
    st = o.get("status") or {}
    parts = [f"{md.get('name')}", f"rv={md.get('resourceVersion')}", f"phase={st.get('phase')}"]
    if st.get("reason"):
        parts.append(f"reason={st['reason']}")
    if md.get("deletionTimestamp"):
        parts.append(f"deleting={md['deletionTimestamp']} fin={md.get('finalizers')}")
    rr = st.get("runtimeRef") or {}
    if rr:
        parts.append(f"ref={rr.get('name')}" + (f" observed={rr['jobObservedAt']}" if rr.get("jobObservedAt") else ""))
    if st.get("updatedAt"):
        parts.append(f"updatedAt={st['updatedAt']}")
    if st.get("finishedAt"):
        parts.append(f"finishedAt={st['finishedAt']}")
    for i, s in enumerate(((st.get("workflow") or {}).get("steps")) or []):
        d = f"\n        step{i + 1} {s.get('name')} {s.get('phase')} a={s.get('attempt')} job={(s.get('jobRef') or {}).get('name')}"
        d += f" started={s.get('startedAt')} finished={s.get('finishedAt')} observed={s.get('jobObservedAt')}"
        if s.get("message"):
            d += f" msg={s['message']!r}"
        if s.get("nextRetryAt"):
            d += f" nextRetryAt={s['nextRetryAt']}"
        loop = s.get("loop")
        if loop:
            d += f"\n          loop cur={loop.get('currentIteration')} done={loop.get('completedIterations')} stop={loop.get('stopReason')}"
            for it in loop.get("iterations") or []:
                d += f"\n          iter{it.get('index')} {it.get('phase')} attempts={it.get('attempts')} job={(it.get('jobRef') or {}).get('name')} msg={it.get('message')!r}"
        parts.append(d)
    return " ".join(parts)


def job_line(ev):
    o = ev["object"]
    md = o.get("metadata") or {}
    st = o.get("status") or {}
    sp = o.get("spec") or {}
    conds = ",".join(f"{c['type']}@{c.get('lastTransitionTime')}" for c in st.get("conditions") or [] if c.get("status") == "True")
    parts = [f"{md.get('name')}", f"created={md.get('creationTimestamp')}", f"ttl={sp.get('ttlSecondsAfterFinished')}",
             f"active={st.get('active')} ok={st.get('succeeded')} failed={st.get('failed')}"]
    if conds:
        parts.append(f"conds={conds}")
    if st.get("completionTime"):
        parts.append(f"completion={st['completionTime']}")
    if md.get("deletionTimestamp"):
        parts.append(f"deleting={md['deletionTimestamp']} fin={md.get('finalizers')}")
    mf = [f"{m.get('manager')}:{m.get('operation')}@{m.get('time')}" for m in md.get("managedFields") or []]
    parts.append(f"mf={mf}")
    return " ".join(parts)


def pod_line(ev):
    o = ev["object"]
    md = o.get("metadata") or {}
    st = o.get("status") or {}
    parts = [f"{md.get('name')}", f"phase={st.get('phase')}"]
    if md.get("deletionTimestamp"):
        parts.append(f"deleting={md['deletionTimestamp']}")
    return " ".join(parts)


def main():
    raw = sys.argv[1]
    items = load(os.path.join(raw, "agentruns.jsonl"), "RUN") + load(os.path.join(raw, "jobs.jsonl"), "JOB") + load(
        os.path.join(raw, "pods.jsonl"), "POD"
    )
    ap = os.path.join(raw, "actions.log")
    if os.path.exists(ap):
        with open(ap) as f:
            for line in f:
                t, _, rest = line.rstrip("\n").partition(" ")
                items.append((t, "ACT", rest))
    items.sort(key=lambda x: x[0])
    for t, kind, ev in items:
        if kind == "ACT":
            print(f"{t} ACT  {ev}")
            continue
        typ = ev.get("type")
        line = {"RUN": run_line, "JOB": job_line, "POD": pod_line}[kind](ev)
        print(f"{t} {kind} {typ:8} {line}")
    cl = os.path.join(raw, "controller.log")
    if os.path.exists(cl):
        print("---- controller decisions ----")
        with open(cl) as f:
            text = f.read()
        for m in re.finditer(r"^(====[^\n]*|\[agents\]\[agents-controller\] (\S+) \{(.*?)^\})", text, re.S | re.M):
            if m.group(1).startswith("===="):
                print(m.group(1))
                continue
            body = " ".join(m.group(3).split())
            body = re.sub(r'(component|event|namespace|generation|repository|runtimeType): ("[^"]*"|\S+),? ?', "", body)
            if m.group(2) in ("agentrun_resync_completed",):
                continue
            print(f"{m.group(2)} {body[:300]}")
        other = [l for l in text.splitlines() if l.startswith("[agents]") and "[agents-controller]" not in l]
        for l in other:
            print(l[:300])


if __name__ == "__main__":
    main()
