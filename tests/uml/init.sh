#!/bin/sh
# init (PID 1) of a User-Mode Linux guest that boots off the host's own root
# (hostfs), started by tests/uml/harness.py.
#
# The kernel passes unknown name=value words of its command line to init as
# environment variables: VIGIL_UML_JOB names a job directory (under the
# host's /tmp, which the guest sees) holding job.sh, the command to run;
# VIGIL_UML_MODULES the directory whose lib/modules/<version> is this
# kernel's module tree (tests/uml/kernel.py; the job inherits it, and
# tests/uml/guestnet.py loads veth from it); VIGIL_UML_ADDR, if set, is the
# address to give vec0 (a tap network).
# The job's exit status goes to the console as a marker line the harness
# reads back, because linux.uml's own exit status says nothing about it.
# If the job cannot run, a "vigil-uml: ..." line says why and there is no marker.

PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev/shm 2>/dev/null

# SCTP with its dependencies (modules.dep). Since 6.x needed by hand: hmac
# (else listen() fails with ENOSYS), which 7.x's SCTP no longer uses.
if ! err=$(modprobe -d "$VIGIL_UML_MODULES" sctp 2>&1); then
    echo "vigil-uml: cannot load SCTP: $err"
    poweroff -f
fi

ip link set lo up
if [ -n "$VIGIL_UML_ADDR" ]; then
    ip addr add "$VIGIL_UML_ADDR" dev vec0
    ip link set vec0 up
fi

sh "$VIGIL_UML_JOB/job.sh"
echo "VIGIL-UML-EXIT=$?"
sync
poweroff -f
