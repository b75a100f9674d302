#!/usr/bin/env bash
# One-step set-up on a fresh Debian/Ubuntu machine: the system libraries QtWebEngine needs,
# Xvfb for screenshots and the GUI tests, then a virtual environment .venv/ in the checkout with
# the app (ONNX Runtime included), its test extra and Ray (stock Debian/Ubuntu Pythons refuse
# `pip install` outside one).
# Downloads several GB the first time (torch with its CUDA libraries, Qt WebEngine, Ray).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}

APT_PACKAGES=(
  # QtWebEngine (the map) on a minimal system; libasound2 is libasound2t64 on Ubuntu 24.04+
  libnss3 libxcomposite1 libxdamage1 libxrandr2 libxtst6 libxkbfile1 libxkbcommon0
  libgbm1 libegl1 libgl1 libfontconfig1 libglib2.0-0 libdbus-1-3
  # a real window under Xvfb (screenshot mode, GUI tests)
  xvfb xauth libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-render-util0
  libxcb-shape0 libxkbcommon-x11-0
)

if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # the package name that exists on this release
  if apt-cache show libasound2t64 >/dev/null 2>&1; then
    APT_PACKAGES+=(libasound2t64)
  else
    APT_PACKAGES+=(libasound2)
  fi
  # Debian's python3 has no venv/ensurepip without this package
  "$PY" -c "import ensurepip, venv" 2>/dev/null || APT_PACKAGES+=(python3-venv)
  $SUDO apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}"
else
  echo "setup: no apt-get here; install the Qt WebEngine system libraries with your package manager" >&2
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# ONNX Runtime and onnx come with the app (pyproject.toml): the engine that indexes and locates
# on CPUs without importing torch (README "What runs where").
"$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1" -e ".[test,distributed]"
"$VENV/bin/python" -c "import onnx, onnxruntime; print('setup: ONNX Runtime', onnxruntime.__version__)"
echo "setup: done. Run the app with $VENV/bin/netvlad-gui, or 'source $VENV/bin/activate' first."
