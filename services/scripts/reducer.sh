#!/bin/bash
exec "${DRO_PYTHON:-python3}" -m distrdf_oscar.functions reducer
