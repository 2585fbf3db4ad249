-- wrk script: a webhook delivery's shape (a ~400-byte signed JSON POST) to the receiver.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["webhook-id"] = "evt_1"
wrk.headers["webhook-timestamp"] = "1700000000"
wrk.headers["webhook-signature"] = "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="
wrk.body = '{"event":"note.created","caseId":"01a21527-1b8e-73c6-bade-bed29b3df9f7","noteId":"note_01a215271bb07375b1a8ac4c8122653a",'
    .. '"createdBy":"Acme Creditor","timestamp":"2026-11-26T00:00:14.255526Z","tags":["payment","call"],"padding":"'
    .. string.rep("x", 160) .. '"}'
