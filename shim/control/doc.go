// Package control is sockshim's control socket: a unix stream socket on which
// `sockshim reload` and `sockshim status` talk to the running supervisor.
//
// The protocol is JSON lines. The client sends one Request line (at most
// 64 KiB, within 5 s of connecting); the server answers with zero or more
// progress Reply lines and then exactly one final Reply with Done set.
// Only root and the supervisor's own uid may connect (SO_PEERCRED), on top
// of the socket's 0600 mode and its directory's; the client in turn
// believes only a server run by root or by its own uid.
package control
