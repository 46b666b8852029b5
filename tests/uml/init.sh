#!/bin/sh
# init (PID 1) of a User-Mode Linux guest that boots off the host's own root
# (hostfs), started by tests/uml/harness.py.
#
# The kernel passes unknown name=value words of its command line to init as
# environment variables: VIGIL_UML_JOB names a job directory (under the
# host's /tmp, which the guest sees) holding job.sh, the command to run;
# VIGIL_UML_ADDR, if set, is the address to give eth0 (a tap network).
# The job's exit status goes to the console as a marker line the harness
# reads back, because linux.uml's own exit status says nothing about it.

PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev/shm 2>/dev/null

# SCTP and what it needs, in dependency order; without hmac, listen() on an
# SCTP socket fails with ENOSYS.
mods=/usr/lib/uml/modules/$(uname -r)/kernel
for m in lib/crc-ccitt.ko net/ipv6/ipv6.ko net/ipv4/udp_tunnel.ko \
         net/ipv6/ip6_udp_tunnel.ko net/sctp/sctp.ko crypto/hmac.ko; do
    insmod "$mods/$m" || echo "vigil-uml: insmod $m failed"
done

# veth, for tests that put a device agent in a network namespace behind a
# cable they can pull (tests/uml/guestnet.py); optional.
insmod "$mods/drivers/net/veth.ko" 2>/dev/null || echo "vigil-uml: no veth module"

ip link set lo up
if [ -n "$VIGIL_UML_ADDR" ]; then
    ip addr add "$VIGIL_UML_ADDR" dev eth0
    ip link set eth0 up
fi

sh "$VIGIL_UML_JOB/job.sh"
echo "VIGIL-UML-EXIT=$?"
sync
poweroff -f
