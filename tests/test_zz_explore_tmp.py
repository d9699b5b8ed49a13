import asyncio, json, uuid

async def test_explore(api, tenant, make_app, stack):
    h = tenant.headers
    pr = await api.post("/api/projects", json={"name": "p"}, headers=h)
    pid = pr.json()["id"]
    t = await api.post("/api/templates", json={"name": "t", "version": "1", "schema": {"type": "object"}}, headers=h)
    tid = t.json()["id"]
    async def show(label, coro):
        try:
            r = await coro
            print(label, r.status_code, r.headers.get("content-type"), r.text[:250])
        except BaseException as e:
            print(label, "EXC", type(e).__name__, str(e)[:200])
    await show("textplain", api.post("/api/templates", content=b'{"name":"a","version":"1","schema":{}}', headers={**h, "content-type": "text/plain"}))
    await show("noctype", api.post("/api/templates", content=b'{"name":"a","version":"9","schema":{}}', headers={**h}))
    await show("empty", api.post("/api/templates", content=b'', headers={**h, "content-type": "application/json"}))
    await show("array", api.post("/api/templates", json=[1], headers=h))
    await show("malformed", api.post("/api/templates", content=b'{"name": "a",', headers={**h, "content-type": "application/json"}))
    await show("badutf8", api.post("/api/templates", content=b'{"name": "\xff"}', headers={**h, "content-type": "application/json"}))
    for d in (400, 900, 1500):
        await show(f"deep{d}", api.post("/api/instances", content=('{"template_id": "%s", "project_id": "%s", "values": {"x": %s}}' % (tid, pid, "[" * d + "]" * d)).encode(), headers={**h, "content-type": "application/json"}))
    await show("bigint", api.post("/api/instances", json={"template_id": tid, "project_id": pid, "values": {"x": 2**80}}, headers=h))
    await show("pathuuid", api.get("/api/templates/not-a-uuid", headers=h))
    await show("filteruuid", api.get("/api/instances", params={"project_id": "zzz"}, headers=h))
    await show("limit", api.get("/api/instances", params={"limit": "abc"}, headers=h))
    rs = await asyncio.gather(*[api.post("/api/templates", json={"name": "dup", "version": "1", "schema": {}}, headers=h) for _ in range(5)])
    print("dups", [r.status_code for r in rs])
    async for client in make_app(stack.with_(max_body_bytes=2048)):
        await show("big", client.post("/api/templates", json={"name": "big", "version": "1", "schema": {"description": "x" * 5000}}, headers=h))
        await show("big-nolen", client.post("/api/templates", content=iter([b'{"name": "big", "version": "1", "schema": {"description": "', b"x" * 5000, b'"}}']), headers={**h, "content-type": "application/json"}))
        await show("small", client.post("/api/templates", json={"name": "small", "version": "1", "schema": {}}, headers=h))
    r = await api.get("/api/templates", params={"name": "big"}, headers=h)
    print("big stored", r.json()["items"])
    r = await api.get("/api/events", headers=h)
    print(json.dumps(r.json())[:1500])
