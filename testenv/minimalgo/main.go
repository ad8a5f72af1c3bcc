// Command minimalgo does nothing: its run time is what starting any Go
// program costs on this machine, the yardstick for sockshim-handoff.
package main

func main() {}
