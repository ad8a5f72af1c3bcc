#!/bin/sh
# After removal (.deb postrm: "remove" | "purge" | …; .rpm %postun: 0 = erase,
# 1 = upgrade). Purge also removes the enablement links of sockshim@ units
# and the runtime directory; the admin's own configs in /etc/sockshim stay.
set -e
case "$1" in
	purge|0)
		find /etc/systemd/system -type l -lname '*/sockshim@.s*' -delete 2>/dev/null || true
		rmdir --ignore-fail-on-non-empty /run/sockshim 2>/dev/null || true
		;;
esac
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
exit 0
