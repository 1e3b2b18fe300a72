// The benchmark's Go peer: the 2017 talk's design, net/http + a redigo pool, GET / answering
// the value read with one HGET per request from a local Redis replica. Built by scripts/bench.sh
// from Debian's golang-github-gomodule-redigo-dev (GOPATH mode, no module download).
//
// Usage: redigo -listen 127.0.0.1:8090 -redis 127.0.0.1:6379 [-pool 16]
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"strconv"
	"time"

	"github.com/gomodule/redigo/redis"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "address:port to serve on")
	addr := flag.String("redis", "127.0.0.1:6379", "host:port of the Redis replica")
	size := flag.Int("pool", 16, "max active Redis connections (the talk's pool)")
	flag.Parse()
	pool := &redis.Pool{
		MaxIdle:     *size,
		MaxActive:   *size,
		Wait:        true,
		IdleTimeout: time.Minute,
		Dial: func() (redis.Conn, error) {
			return redis.Dial("tcp", *addr, redis.DialConnectTimeout(time.Second))
		},
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		conn := pool.Get()
		defer conn.Close()
		text, err := redis.String(conn.Do("HGET", "currency", "current-value"))
		if err != nil {
			http.Error(w, `{"error":"redis"}`, http.StatusServiceUnavailable)
			return
		}
		value, err := strconv.ParseFloat(text, 64)
		if err != nil {
			http.Error(w, `{"error":"not a number"}`, http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]float64{"current": value})
	})
	log.Printf("listening on %s", *listen)
	log.Fatal(http.ListenAndServe(*listen, nil))
}
