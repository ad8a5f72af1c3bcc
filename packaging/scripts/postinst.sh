#!/bin/sh
# After install or upgrade (.deb postinst: "configure" [old-version];
# .rpm %post: 1 = install, 2 = upgrade).
# On upgrade, every running sockshim supervisor is *reloaded*, never
# restarted: its workers are exec'd again from the new files while the
# sockets stay open. Without a running systemd (chroot, container build)
# nothing is done.
set -e

upgrade=no
case "$1" in
	configure) [ -n "$2" ] && upgrade=yes ;;
	2) upgrade=yes ;;
esac

[ -d /run/systemd/system ] || exit 0
systemctl daemon-reload || true
[ "$upgrade" = yes ] || exit 0

# Find supervisors by their binary, whatever their unit is called: a main
# process whose executable is (or was, before this upgrade) /usr/bin/sockshim.
for exe in /proc/[0-9]*/exe; do
	target=$(readlink "$exe" 2>/dev/null) || continue
	case "$target" in
		/usr/bin/sockshim|"/usr/bin/sockshim (deleted)") ;;
		*) continue ;;
	esac
	pid=${exe#/proc/}
	pid=${pid%/exe}
	unit=$(sed -n 's|^[0-9]*:[^:]*:.*/\([^/]*\.service\)$|\1|p' "/proc/$pid/cgroup" 2>/dev/null | head -n 1)
	[ -n "$unit" ] || continue
	[ "$(systemctl show -p MainPID --value "$unit" 2>/dev/null)" = "$pid" ] || continue
	if systemctl reload "$unit"; then
		echo "sockshim: reloaded $unit onto the new version"
	else
		echo "sockshim: reloading $unit failed; it keeps serving its previous generation (see: systemctl status $unit)" >&2
	fi
done
exit 0
