// A webhook receiver for the benchmarks: answers every POST 200 and counts it; GET /count
// returns the count. Prints its port, then serves until killed.
const http = require("http");
let count = 0;
const server = http.createServer((req, res) => {
  if (req.method === "GET") {
    res.end(String(count));
    return;
  }
  req.on("data", () => {});
  req.on("end", () => {
    count += 1;
    res.end("ok");
  });
});
server.keepAliveTimeout = 60000;
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
