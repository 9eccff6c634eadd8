wrk.method = "POST"
wrk.body = '{"model":"main","messages":[{"role":"user","content":"hello"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer key-0"
