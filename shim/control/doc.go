// Package control is sockshim's control socket: a unix stream socket on which
// `sockshim reload` and `sockshim status` talk to the running supervisor.
//
// The protocol is JSON lines. The client sends one Request; the server answers
// with zero or more Progress lines and then exactly one final Response. Only
// root and the supervisor's own uid may connect (SO_PEERCRED), on top of the
// socket's 0600 mode.
package control
