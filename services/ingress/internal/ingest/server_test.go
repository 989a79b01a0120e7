package ingest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// dial opens a raw connection to the webhook port (closed when the test
// ends) and its reader.
func dial(t *testing.T, url string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	return conn, bufio.NewReader(conn)
}

// exchange writes raw bytes to the webhook port and reads the answer.
func exchange(t *testing.T, url, raw string) *http.Response {
	t.Helper()
	conn, br := dial(t, url)
	if _, err := conn.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func request(method, path, header, body string) string {
	return fmt.Sprintf("%s %s HTTP/1.1\r\nHost: ingress\r\n%sContent-Length: %d\r\n\r\n%s", method, path, header, len(body), body)
}

// The port serves one route: its other paths are 404, its other methods
// 405 with Allow, and what is not HTTP/1.1 a 400 — every answer JSON, none
// naming the server software. A body declared or sent over the limit is
// 413 once the first 8 KiB of it arrived (the server reads no more ahead).
func TestThePortAnswersOnlyItsRoute(t *testing.T) {
	rec := &recorder{}
	s := server(t, rec)
	signed := "Content-Type: application/json\r\nX-Delighted-Webhook-Signature: " + sign(body) + "\r\n"
	cases := []struct {
		name, raw string
		status    int
		reason    string
	}{
		{"the route", request("POST", "/v1/hooks/delighted/"+token, signed, body), 202, ""},
		{"a segment more", request("POST", "/v1/hooks/delighted/"+token+"/x", signed, body), 404, "not_found"},
		{"a trailing slash", request("POST", "/v1/hooks/delighted/"+token+"/", signed, body), 404, "not_found"},
		{"no token", request("POST", "/v1/hooks/delighted", signed, body), 404, "not_found"},
		{"another path", request("POST", "/metrics", signed, body), 404, "not_found"},
		{"another method", request("PUT", "/v1/hooks/delighted/"+token, signed, body), 405, "method_not_allowed"},
		{"not HTTP", "HELLO\r\n\r\n", 400, "malformed_request"},
		{"headers over the limit", request("POST", "/v1/hooks/delighted/"+token, "X-Pad: "+strings.Repeat("a", 20<<10)+"\r\n"+signed, body), 431, "headers_too_large"},
		{"a declared body over the limit", "POST /v1/hooks/delighted/" + token + " HTTP/1.1\r\nHost: i\r\n" + signed + "Content-Length: 999999999\r\n\r\n" + strings.Repeat("x", 8<<10), 413, "payload_too_large"},
		{"a chunked body over the limit", "POST /v1/hooks/delighted/" + token + " HTTP/1.1\r\nHost: i\r\n" + signed + "Transfer-Encoding: chunked\r\n\r\n" +
			strings.Repeat("400\r\n"+strings.Repeat("x", 1024)+"\r\n", 5) + "0\r\n\r\n", 413, "payload_too_large"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := exchange(t, s.URL, c.raw)
			var a answer
			_ = decodeAnswer(resp, &a)
			if resp.StatusCode != c.status || a.Error != c.reason {
				t.Fatalf("got %d %+v, want %d %q", resp.StatusCode, a, c.status, c.reason)
			}
			if resp.Header.Get("Server") != "" || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("headers %v", resp.Header)
			}
			if c.status == 405 && resp.Header.Get("Allow") != "POST" {
				t.Fatalf("405 without Allow: POST: %v", resp.Header)
			}
		})
	}
	if len(rec.recs) != 1 {
		t.Fatalf("%d records stored, want the one accepted", len(rec.recs))
	}
}

// A chunked body within the limit is read as it arrives and stored whole;
// so are keep-alive requests one after another on one connection.
func TestChunkedAndKeepAliveRequestsAreStoredWhole(t *testing.T) {
	rec := &recorder{}
	s := server(t, rec)
	conn, br := dial(t, s.URL)
	for i := range 3 {
		b := strings.Replace(body, "abc123", fmt.Sprintf("ka%d", i), 1)
		raw := "POST /v1/hooks/delighted/" + token + " HTTP/1.1\r\nHost: i\r\nContent-Type: application/json\r\nX-Delighted-Webhook-Signature: " + sign(b) + "\r\n"
		if i == 1 {
			raw += "Transfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n", 10, b[:10], len(b)-10, b[10:])
		} else {
			raw += fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(b), b)
		}
		if _, err := conn.Write([]byte(raw)); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		var a answer
		_ = decodeAnswer(resp, &a)
		if resp.StatusCode != 202 || a.EventID != fmt.Sprintf("ka%d", i) {
			t.Fatalf("request %d: %d %+v", i, resp.StatusCode, a)
		}
	}
	if len(rec.recs) != 3 {
		t.Fatalf("%d records", len(rec.recs))
	}
}

func decodeAnswer(resp *http.Response, a *answer) error { return json.NewDecoder(resp.Body).Decode(a) }

// A sender that waits for 100 Continue (curl does for bodies over 1 KiB)
// gets it, then its answer.
func TestExpectContinueGetsAContinueThenTheAnswer(t *testing.T) {
	rec := &recorder{}
	s := server(t, rec)
	conn, br := dial(t, s.URL)
	head := "POST /v1/hooks/delighted/" + token + " HTTP/1.1\r\nHost: i\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n" +
		"X-Delighted-Webhook-Signature: " + sign(body) + fmt.Sprintf("\r\nContent-Length: %d\r\n\r\n", len(body))
	if _, err := conn.Write([]byte(head)); err != nil {
		t.Fatal(err)
	}
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("first line %q, %v: want 100 Continue before the body is sent", line, err)
	}
	if blank, _ := br.ReadString('\n'); blank != "\r\n" {
		t.Fatalf("after 100: %q", blank)
	}
	if _, err := conn.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusAccepted || len(rec.recs) != 1 {
		t.Fatalf("status %d, %d records", resp.StatusCode, len(rec.recs))
	}
}

// Whatever methods a scanner sends, the duration metric's method label has
// two values: POST and _OTHER.
func TestTheMethodLabelStaysBounded(t *testing.T) {
	h := handler(t, &recorder{})
	for _, m := range []string{"POST", "GET", "FOO1", "FOO2", "PROPFIND", "DELETE"} {
		rc := handle(h, m, "/v1/hooks/delighted/"+token, map[string]string{"Content-Type": "application/json", "X-Delighted-Webhook-Signature": sign(body)}, body)
		if want := map[bool]int{true: 202, false: 405}[m == "POST"]; rc.Response.StatusCode() != want {
			t.Fatalf("%s: status %d, want %d", m, rc.Response.StatusCode(), want)
		}
	}
	h.opts.mu.RLock()
	defer h.opts.mu.RUnlock()
	for k := range h.opts.durations {
		if k.outcome != "POST" && k.outcome != "_OTHER" {
			t.Fatalf("method label %q", k.outcome)
		}
	}
	if len(h.opts.durations) != 2 {
		t.Fatalf("%d label sets, want POST/202 and _OTHER/405: %v", len(h.opts.durations), h.opts.durations)
	}
}

// A client still sending a body the port refused from its headers reads
// the refusal: the connection lingers (linger.go) rather than being reset
// under the client's writes, which a client sees as "connection reset by
// peer" instead of the 413.
func TestAClientStillSendingARefusedBodyReadsTheAnswer(t *testing.T) {
	s := server(t, &recorder{})
	body := bytes.Repeat([]byte("x"), 4<<20) // more than the socket buffers hold
	for i := range 10 {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
		resp, err := c.Post(s.URL+"/v1/hooks/delighted/"+token, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatalf("attempt %d: %v", i, err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("attempt %d: %d, want 413", i, resp.StatusCode)
		}
	}
}

// Lingering is bounded: a connection closed with unread input is closed
// for good after lingerTimeout even when its client never stops sending,
// and one with nothing unread closes at once.
func TestALingeringConnectionIsClosedWithinItsBound(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Lingering(lis)
	defer l.Close()
	for _, unread := range []bool{false, true} {
		client, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		server, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		if unread {
			_, _ = client.Write([]byte("unread"))
			time.Sleep(50 * time.Millisecond) // arrived
			go func() {                       // a client that never stops sending
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := client.Write(make([]byte, 1024)); err != nil {
						return
					}
					time.Sleep(10 * time.Millisecond)
				}
			}()
		}
		start := time.Now()
		if err := server.Close(); err != nil {
			t.Fatal(err)
		}
		// The client sees the FIN (EOF) at once either way, then the close.
		_ = client.SetReadDeadline(time.Now().Add(lingerTimeout + 3*time.Second))
		if _, err := client.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("unread=%v: the client read %v, want EOF", unread, err)
		}
		for unread {
			if _, err := client.Write(make([]byte, 1024)); err != nil {
				break // closed for good
			}
			if time.Since(start) > lingerTimeout+3*time.Second {
				t.Fatal("a lingering connection was still open long after lingerTimeout")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if !unread && time.Since(start) > time.Second {
			t.Fatal("a connection with nothing unread lingered")
		}
		close(stop)
		client.Close()
	}
}

// The recycled header sets: a request sees only its own headers, whatever
// the request before it had, and what a handler kept of a value before the
// release is not overwritten by the next request.
func TestARecycledHeaderSetHoldsOnlyItsRequestsHeaders(t *testing.T) {
	names := []string{"Content-Type", "User-Agent", "X-Signature"}
	parse := func(raw string) *fasthttp.RequestHeader {
		var h fasthttp.RequestHeader
		if err := h.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
			t.Fatal(err)
		}
		return &h
	}
	first := requestHeader(parse("POST /a HTTP/1.1\r\nHost: x\r\nUser-Agent: one\r\nX-Signature: sig-1\r\n\r\n"), names)
	kept := first.h.Get("X-Signature")
	first.release()
	for range 3 { // the pool hands the same set back within a goroutine, most of the time
		second := requestHeader(parse("POST /a HTTP/1.1\r\nHost: x\r\nX-Signature: sig-2\r\nContent-Type: application/json\r\n\r\n"), names)
		want := http.Header{"X-Signature": {"sig-2"}, "Content-Type": {"application/json"}}
		if fmt.Sprint(second.h) != fmt.Sprint(want) {
			t.Fatalf("headers = %v, want %v", second.h, want)
		}
		second.release()
	}
	if kept != "sig-1" {
		t.Fatalf("a value kept from the first request became %q", kept)
	}
}
