#!/bin/sh
# distrdf-oscar batch: POSIX sh, as OSCAR's supervisor runs it.
python="${DRO_PYTHON:-python3}"
output=$(mktemp) status=$(mktemp)
{ "$python" -m distrdf_oscar.functions batch 2>&1; echo $? > "$status"; } | tee "$output"
code=$(cat "$status")
case "$code" in
  0|3) ;;
  *) "$python" -m distrdf_oscar.functions.crash batch "$code" "$output" ;;
esac
rm -f "$output" "$status"
