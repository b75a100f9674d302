#!/usr/bin/env bash
# One-step set-up on a fresh Debian/Ubuntu machine: the system libraries QtWebEngine needs,
# Xvfb for screenshots and the GUI tests, then the app with its test extra.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  # QtWebEngine (the map) on a minimal system
  libnss3 libxcomposite1 libxdamage1 libxrandr2 libxtst6 libxkbfile1 libxkbcommon0 libasound2
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
  $SUDO apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}"
else
  echo "setup: no apt-get here; install the Qt WebEngine system libraries with your package manager" >&2
fi

PY=${PYTHON:-python3}
"$PY" -m pip install --upgrade pip
"$PY" -m pip install "torch==2.14.1" "torchvision==0.29.1" -e ".[test,distributed]"
