#!/bin/bash
# How the timed blocks of BENCHMARKS.md "ONNX Runtime vs eager PyTorch (CPU)" and of the
# self-ensemble cost were run on the shared 2-vCPU machine: the two long study trainings are paused
# (SIGSTOP) for the block and always resumed (SIGCONT, in the EXIT trap), and the total paused time
# over all blocks is capped (a ledger of seconds; the block's command is cut by `timeout` at what is
# left). /proc/loadavg is logged before and after. Not part of the framework; kept as the record.
#
#   bash run_paused.sh LOG -- COMMAND ...     (DRY=1: everything but the pausing, for a dry run;
#                                              OWN_PIDS="..." also pauses these processes of ours)
set -u
LOG=$1; shift; [ "$1" = "--" ] && shift
LEDGER=${LEDGER:-/tmp/measure/pause_ledger.txt}
CAP=${CAP:-1980}                  # 33 min of the 35 allowed, 2 min of margin
PATTERN="run.py -c config/study/"
used=$(awk '{s += $1} END {print s + 0}' "$LEDGER" 2>/dev/null || echo 0)
left=$((CAP - used))
if [ "$left" -lt 60 ]; then echo "pause budget spent ($used s used)" | tee -a "$LOG"; exit 3; fi
start=0
resume() {
    if [ "$start" -gt 0 ]; then
        [ "${DRY:-0}" = 1 ] || pkill -CONT -f "$PATTERN"
        [ -z "${OWN_PIDS:-}" ] || kill -CONT ${OWN_PIDS}
        echo $(( $(date +%s) - start )) >> "$LEDGER"
        start=0
        echo "resumed $(date -u +%FT%TZ), loadavg $(cat /proc/loadavg); study processes: $(ps -eo stat,args | grep "$PATTERN" | grep -v grep | cut -c1-3 | sort | uniq -c | tr '\n' ' ')" >> "$LOG"
    fi
}
trap resume EXIT
start=$(date +%s)
[ "${DRY:-0}" = 1 ] || pkill -STOP -f "$PATTERN"
[ -z "${OWN_PIDS:-}" ] || kill -STOP ${OWN_PIDS}
{
    echo "paused $(date -u +%FT%TZ) (DRY=${DRY:-0}), $used s of the $CAP s cap used before, $left s left"
    echo "study processes: $(ps -eo stat,args | grep "$PATTERN" | grep -v grep | cut -c1-3 | sort | uniq -c | tr '\n' ' ')"
    sleep 5
    echo "loadavg before: $(cat /proc/loadavg)"
    echo "command: $*"
} >> "$LOG"
timeout --signal=INT "$left" "$@" >> "$LOG" 2>&1 &
child=$!
trap 'kill -INT $child 2>/dev/null; wait $child; exit 130' INT TERM HUP   # a signal to the wrapper stops the block now
wait $child
rc=$?
echo "rc=$rc; loadavg after: $(cat /proc/loadavg); block $(( $(date +%s) - start )) s" >> "$LOG"
exit $rc
