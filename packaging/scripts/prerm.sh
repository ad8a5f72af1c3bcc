#!/bin/sh
# Before removal (.deb prerm: "remove"; .rpm %preun: 0 = erase, 1 = upgrade).
# On removal the template instances are stopped; an upgrade touches nothing
# here (postinst reloads afterwards).
set -e
case "$1" in
	remove|0) ;;
	*) exit 0 ;;
esac
[ -d /run/systemd/system ] || exit 0
# Debian's deb-systemd-invoke honours policy-rc.d (no service actions in
# image builds); elsewhere plain systemctl.
invoke=systemctl
command -v deb-systemd-invoke >/dev/null 2>&1 && invoke=deb-systemd-invoke
$invoke stop 'sockshim@*.socket' 'sockshim@*.service' || true
exit 0
