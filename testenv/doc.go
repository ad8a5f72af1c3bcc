// Package testenv is sockshim's test environment: a real systemd user
// manager booted in a private mount namespace, builds of the binaries under
// test, and /proc inspection for counting processes, zombies and
// descriptors. The testworker and the load client live in subpackages.
package testenv
