#!/bin/sh
# distrdf-oscar coordinator: POSIX sh, as OSCAR's supervisor runs it.
python="${DRO_PYTHON:-python3}"
output=$(mktemp) status=$(mktemp)
{ "$python" -m distrdf_oscar.functions coordinator 2>&1; echo $? > "$status"; } | tee "$output"
code=$(cat "$status")
case "$code" in
  0|3) ;;
  *) "$python" -m distrdf_oscar.functions.crash coordinator "$code" "$output" ;;
esac
rm -f "$output" "$status"
