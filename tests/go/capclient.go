// capclient: Go's net/http client (what vegeta, hey and the 2017 talk's tools are built on)
// sending GETs from many goroutines at once, each on its own keep-alive connection, for a
// bounded time and count. It prints one JSON line: answers by status, transport errors by
// message, and the "Unsolicited response" lines Go's transport logs when a server writes
// before it was asked. Used by tests/go_client.rs and the chaos suite.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// logTap counts the lines Go's transport logs about unsolicited responses.
type logTap struct {
	mu          sync.Mutex
	unsolicited int
	lines       []string
}

func (t *logTap) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, line := range strings.Split(strings.TrimSpace(string(p)), "\n") {
		if strings.Contains(line, "Unsolicited response") {
			t.unsolicited++
		}
		if len(t.lines) < 5 {
			t.lines = append(t.lines, line)
		}
	}
	return len(p), nil
}

type result struct {
	Codes       map[string]int `json:"codes"`
	Errors      map[string]int `json:"errors"`
	Unsolicited int            `json:"unsolicited"`
	LogLines    []string       `json:"log_lines"`
}

func main() {
	url := flag.String("url", "", "URL to GET")
	conns := flag.Int("c", 32, "concurrent clients, one keep-alive connection each")
	duration := flag.Duration("d", 3*time.Second, "how long to send")
	max := flag.Int("n", 100000, "most requests in all")
	timeout := flag.Duration("timeout", 5*time.Second, "client timeout of each request")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "usage: capclient -url URL [-c N] [-d DURATION] [-n MAX] [-timeout DURATION]")
		os.Exit(2)
	}
	tap := &logTap{}
	log.SetOutput(tap)
	client := &http.Client{
		Timeout: *timeout,
		Transport: &http.Transport{
			MaxIdleConns:        *conns,
			MaxIdleConnsPerHost: *conns,
			DisableCompression:  true,
		},
	}
	res := result{Codes: map[string]int{}, Errors: map[string]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var sent int
	until := time.Now().Add(*duration)
	for i := 0; i < *conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(until) {
				mu.Lock()
				if sent >= *max {
					mu.Unlock()
					return
				}
				sent++
				mu.Unlock()
				resp, err := client.Get(*url)
				mu.Lock()
				if err != nil {
					msg := err.Error()
					if i := strings.LastIndex(msg, ": "); i >= 0 {
						msg = msg[i+2:]
					}
					res.Errors[msg]++
				} else {
					res.Codes[fmt.Sprint(resp.StatusCode)]++
				}
				mu.Unlock()
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	wg.Wait()
	tap.mu.Lock()
	res.Unsolicited = tap.unsolicited
	res.LogLines = tap.lines
	tap.mu.Unlock()
	var out bytes.Buffer
	if err := json.NewEncoder(&out).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Stdout.Write(out.Bytes())
}
