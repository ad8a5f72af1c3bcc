// Package sockets obtains the listening sockets sockshim holds for its whole
// life: inherited from the service manager (LISTEN_FDS) or bound from the
// config's [[listen]] entries, and watches them for a shutdown(2) by a
// process that shares them (Watch). Sockets are kept as *os.File and handed
// on by raw descriptor; nothing here changes their blocking mode.
package sockets
