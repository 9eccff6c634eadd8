import hashlib,sys
n=int(sys.argv[1]); port=sys.argv[2]
print(f'version = 1\n[upstreams.up]\nbase_url = "http://127.0.0.1:{port}/v1"\n[models.m]\nupstream = "up"\nprice = {{ input_per_mtok = 1.0, output_per_mtok = 2.0 }}\n[[routes]]\nname = "main"\ntargets = ["m"]\n')
for i in range(n):
    h=hashlib.sha256(f"key-{i}".encode()).hexdigest()
    print(f'[callers.c{i}]\nkey_sha256 = "{h}"\n[budgets.b{i}]\nlimit_usd = 1000.0\nwindow = "1d"\nscope = {{ keys = ["c{i}"] }}\n')
