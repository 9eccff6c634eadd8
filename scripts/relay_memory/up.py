import http.server, socketserver, json, sys
BODY=json.dumps({"id":"x","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}).encode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version="HTTP/1.1"
    def do_POST(self):
        n=int(self.headers.get("content-length",0)); self.rfile.read(n)
        self.send_response(200); self.send_header("content-type","application/json"); self.send_header("content-length",str(len(BODY))); self.end_headers(); self.wfile.write(BODY)
    def log_message(self,*a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads=True
S(("127.0.0.1",int(sys.argv[1])),H).serve_forever()
