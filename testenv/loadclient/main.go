// Command loadclient runs the test load client by hand:
//
//	loadclient -url http://127.0.0.1:8080/ -c 32 -d 10s [-keepalive] [-post BYTES] [-json]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/sockshim/sockshim/testenv/load"
)

func main() {
	var o load.Options
	flag.StringVar(&o.URL, "url", "http://127.0.0.1:8080/", "target URL")
	flag.IntVar(&o.Concurrency, "c", 16, "concurrent clients")
	flag.DurationVar(&o.Duration, "d", 0, "duration")
	flag.IntVar(&o.MaxRequests, "n", 0, "total requests")
	flag.BoolVar(&o.KeepAlive, "keepalive", false, "reuse connections")
	flag.IntVar(&o.PostBytes, "post", 0, "send POSTs with a body of this many bytes (never retried)")
	flag.DurationVar(&o.Timeout, "timeout", 0, "per-request timeout (default 5s)")
	asJSON := flag.Bool("json", false, "print the result as JSON")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := load.Run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if *asJSON {
		json.NewEncoder(os.Stdout).Encode(res)
	} else {
		fmt.Println(res)
		for kind, msg := range res.Examples {
			fmt.Printf("  %s: %s\n", kind, msg)
		}
	}
	if res.Failed() > 0 {
		os.Exit(1)
	}
}
