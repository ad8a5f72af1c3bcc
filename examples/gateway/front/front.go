// Package front is the WebSocket side of the gateway example: it accepts
// WebSocket clients, reads their text messages ("ID PAYLOAD", package wire),
// has each one answered, concurrently, by a function, and writes the answers
// back. The gateway answers through the business group; the business
// program's naive mode (-websocket) answers itself.
package front

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/sockshim/sockshim/examples/gateway/wire"
)

// Front serves WebSocket clients. Its zero value is not usable: set Answer.
type Front struct {
	// Answer answers one message's payload with a version and a result.
	// An error is sent to the client as an error answer ("ID ! REASON"):
	// a problem behind the front never closes a client's connection.
	Answer func(ctx context.Context, payload []byte) (version string, result []byte, err error)
	// MaxInFlight bounds the messages of one client being answered at
	// once; reading that client waits while it is reached. Default 64.
	MaxInFlight int
	// WriteTimeout bounds writing one answer; a client that does not read
	// for that long is closed. Default 10s.
	WriteTimeout time.Duration
	Log          *slog.Logger

	mu      sync.Mutex
	clients map[*client]struct{}
	closing bool

	messages, failed atomic.Int64
}

type client struct {
	conn     *websocket.Conn
	inFlight atomic.Int64 // messages received and not yet answered
}

// Stats are a Front's counters.
type Stats struct {
	Clients  int   `json:"clients"`  // open WebSocket connections
	Messages int64 `json:"messages"` // messages received
	Failed   int64 `json:"failed"`   // answered with an error
}

// Stats returns the counters.
func (f *Front) Stats() Stats {
	f.mu.Lock()
	n := len(f.clients)
	f.mu.Unlock()
	return Stats{Clients: n, Messages: f.messages.Load(), Failed: f.failed.Load()}
}

// ServeHTTP accepts a WebSocket client and serves it until it leaves or
// CloseAll closes it.
func (f *Front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	log := f.Log
	if log == nil {
		log = slog.Default()
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		log.Debug("websocket handshake", "remote", r.RemoteAddr, "err", err)
		return // Accept has answered the request
	}
	conn.SetReadLimit(wire.MaxMessage)
	c := &client{conn: conn}
	f.mu.Lock()
	if f.clients == nil {
		f.clients = map[*client]struct{}{}
	}
	if f.closing {
		f.mu.Unlock()
		conn.Close(websocket.StatusGoingAway, "shutting down")
		return
	}
	f.clients[c] = struct{}{}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.clients, c)
		f.mu.Unlock()
		conn.CloseNow()
	}()

	maxInFlight := f.MaxInFlight
	if maxInFlight <= 0 {
		maxInFlight = 64
	}
	slots := make(chan struct{}, maxInFlight)
	// Not cancelled by anything but the connection itself: with
	// coder/websocket, a cancelled read context closes the connection.
	ctx := context.Background()
	for {
		typ, msg, err := conn.Read(ctx)
		if err != nil {
			if s := websocket.CloseStatus(err); s != websocket.StatusNormalClosure && s != websocket.StatusGoingAway {
				log.Debug("client gone", "remote", r.RemoteAddr, "err", err)
			}
			return
		}
		if typ != websocket.MessageText {
			conn.Close(websocket.StatusUnsupportedData, "text messages only")
			return
		}
		req, err := wire.ParseRequest(msg)
		if err != nil {
			if req.ID == nil {
				conn.Close(websocket.StatusPolicyViolation, "want \"ID PAYLOAD\"")
				return
			}
			f.messages.Add(1)
			f.failed.Add(1)
			f.write(c, wire.AppendError(nil, req.ID, err.Error()))
			continue
		}
		f.messages.Add(1)
		slots <- struct{}{}
		c.inFlight.Add(1)
		go func() {
			defer func() { <-slots; c.inFlight.Add(-1) }()
			version, result, err := f.Answer(ctx, req.Payload)
			if err != nil {
				f.failed.Add(1)
				f.write(c, wire.AppendError(nil, req.ID, err.Error()))
				return
			}
			f.write(c, wire.AppendAnswer(nil, req.ID, version, result))
		}()
	}
}

func (f *Front) write(c *client, msg []byte) {
	timeout := f.WriteTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// An error here means the client is gone or stuck; its read loop ends.
	c.conn.Write(ctx, websocket.MessageText, msg)
}

// CloseAll stops accepting clients and closes every open one with 1001
// (going away): first it waits, until ctx ends, for the messages already
// received to be answered, so a client sees the close only after its
// answers.
func (f *Front) CloseAll(ctx context.Context, reason string) {
	f.mu.Lock()
	f.closing = true
	var open []*client
	for c := range f.clients {
		open = append(open, c)
	}
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range open {
		wg.Go(func() {
			for c.inFlight.Load() > 0 && ctx.Err() == nil {
				time.Sleep(10 * time.Millisecond)
			}
			c.conn.Close(websocket.StatusGoingAway, reason)
		})
	}
	wg.Wait()
}
