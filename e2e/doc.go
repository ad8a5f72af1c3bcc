// Package e2e holds sockshim's end-to-end tests: the real sockshim binary,
// real worker processes and, where the test says so, a real systemd user
// manager booted by testenv. There is no non-test code here.
package e2e
