#!/usr/bin/env bash
# Prints the path of a Python 3.10 interpreter, or fails naming what to install.
# Order: $PYTHON310, python3.10 on PATH, pyenv's newest 3.10.x.
set -euo pipefail
is310() { [ -x "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; }
if [ -n "${PYTHON310:-}" ]; then
  is310 "$PYTHON310" && { echo "$PYTHON310"; exit 0; }
  echo "error: PYTHON310=$PYTHON310 is not a Python 3.10 interpreter" >&2; exit 1
fi
if p=$(command -v python3.10 2>/dev/null) && is310 "$p"; then echo "$p"; exit 0; fi
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root)
  for d in $(ls -d "$root"/versions/3.10.* 2>/dev/null | sort -V -r); do
    is310 "$d/bin/python3.10" && { echo "$d/bin/python3.10"; exit 0; }
  done
fi
echo "error: Python 3.10 not found. TFX 1.16 needs Python 3.10: install it" \
     "(e.g. 'pyenv install 3.10.13') or set PYTHON310=/path/to/python3.10." >&2
exit 1
