#!/bin/sh
# distrdf-oscar mapper: POSIX sh, as OSCAR's supervisor runs it.
python="${DRO_PYTHON:-python3}"
output=$(mktemp) status=$(mktemp)
{ "$python" -m distrdf_oscar.functions mapper 2>&1; echo $? > "$status"; } | tee "$output"
code=$(cat "$status")
case "$code" in
  0|3) ;;
  *) "$python" -m distrdf_oscar.functions.crash mapper "$code" "$output" ;;
esac
rm -f "$output" "$status"
