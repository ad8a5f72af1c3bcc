package main

import "github.com/sockshim/sockshim/examples/hello"

// cmdExampleWorker runs the example worker that the embedded default config
// supervises, so `sockshim run` works with nothing else installed.
func cmdExampleWorker(args []string) error { return hello.Main(args) }
