"""Control commands of the people service: people_add (enrol from photos on this node), list, show, remove."""

from __future__ import annotations

from .. import api
from ..node.control import command


class PeopleCommands:
    def __init__(self, svc) -> None:
        self.svc = svc

    @command(api.PeopleAdd)
    async def people_add(self, req: api.PeopleAdd) -> dict:
        return await self.svc.enrol(req.name, list(req.paths), req.detector)

    @command(api.PeopleList)
    async def people_list(self, req: api.PeopleList) -> dict:
        return self.svc.listing()

    @command(api.PeopleShow)
    async def people_show(self, req: api.PeopleShow) -> dict:
        return self.svc.show(req.name)

    @command(api.PeopleRemove)
    async def people_remove(self, req: api.PeopleRemove) -> dict:
        return await self.svc.remove(req.name)
