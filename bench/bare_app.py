"""The limit: a bare FastAPI app returning what ``…/sysinfo/version`` returns, no proxy."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/{edge}/sysinfo/version")
async def version(edge: str) -> dict:
    return {"plugin": "sysinfo", "version": "1.0.0"}
