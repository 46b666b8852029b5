#!/bin/sh
# ensure-debs.sh PKG...: make sure Debian packages are installed.
# As root on Debian/Raspberry Pi OS: installs what is missing. Otherwise: says
# exactly which apt line to type and fails, instead of a raw compiler error later.
missing=""
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "vigil: installing Debian packages:$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$missing >/dev/null
    exit $?
fi
if ! command -v dpkg-query >/dev/null; then
    echo "vigil: not Debian: make sure these (or your system's equivalents) are installed:$missing" >&2
    exit 0
fi
echo "vigil: missing Debian packages. Install them with:" >&2
echo "    sudo apt install$missing" >&2
exit 1
