# Shared by tools/pi-check.sh, tools/image.sh and tools/ha-check.sh (sourced, not run): each step of a check
# ends in one summary line, "NAME ok|FAIL SECONDSs TEXT", which the caller prints at exit.
#
#   begin NAME WHAT          a step starts ("== NAME: WHAT" through the caller's say())
#   done_step TEXT           its ok line
#   fail_step TEXT           its FAIL line, then exit 1
#   close_open_step STATUS   from the EXIT trap: a step a command ended under `set -e` (no fail_step) still
#                            gets its FAIL line, with the exit status
#
# STEP_WIDTH (default 8) is the name column's width. Callers define say() before using these.
SUMMARY=()
STEP="" STEP_START=0
STEP_OPEN=0  # 1 while a step runs without its summary line
STEP_WIDTH=${STEP_WIDTH:-8}

step_line() { printf "%-${STEP_WIDTH}s %-4s %4ss  %s" "$STEP" "$1" $(($(date +%s) - STEP_START)) "$2"; }
begin() { STEP=$1; STEP_START=$(date +%s); STEP_OPEN=1; say "== $1: $2"; }
done_step() {
    SUMMARY+=("$(step_line ok "$1")")
    STEP_OPEN=0
}
fail_step() {
    SUMMARY+=("$(step_line FAIL "$1")")
    STEP_OPEN=0
    exit 1
}
close_open_step() {
    [ "$STEP_OPEN" = 1 ] || return 0
    SUMMARY+=("$(step_line FAIL "exit status $1")")
    STEP_OPEN=0
}
