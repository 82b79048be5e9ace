#!/usr/bin/env bash
# System packages the tests need on a bare Debian/Ubuntu machine: Xvfb (a virtual X
# server for napari's OpenGL canvas) and the X/GL libraries of Qt 6.  Skipped where
# apt-get is not available (install Xvfb by other means there).
set -euo pipefail
if ! command -v apt-get >/dev/null; then
  echo "install-system-deps: no apt-get; make sure Xvfb and the Qt xcb libraries are installed" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
  xvfb xauth libgl1 libegl1 libgl1-mesa-dri libglx-mesa0 libxkbcommon-x11-0 libxcb-cursor0 \
  libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 \
  libxcb-xfixes0 libxcb-xinerama0 libxcb-xkb1 libfontconfig1 libdbus-1-3 libglib2.0-0 \
  fonts-dejavu-core >/dev/null
echo "install-system-deps: done"
