'use strict'
// An SSDP control point made with node-ssdp's Client, for tests/test_npm_peers_lab.py.
//
//   node ssdp-client.js ST COUNT TIMEOUT_MS
//
// Sends one M-SEARCH for ST the way node-ssdp does (multicast to
// 239.255.255.250:1900 from an ephemeral port, out of each IPv4 interface) and
// prints every response it gets as one JSON line: {"status", "headers",
// "address", "port"}. Exits 0 once COUNT responses came and a short grace has
// passed (so a duplicate would still be printed), or 1 at TIMEOUT_MS.
const { Client } = require('node-ssdp')

const [st, countArg, timeoutArg] = process.argv.slice(2)
const count = Number(countArg || 1)
const timeoutMs = Number(timeoutArg || 5000)
const GRACE_MS = 200
if (!st) {
  console.error('usage: node ssdp-client.js ST [COUNT] [TIMEOUT_MS]')
  process.exit(2)
}

const client = new Client()
let got = 0
client.on('response', (headers, status, rinfo) => {
  console.log(JSON.stringify({ status, headers, address: rinfo.address, port: rinfo.port }))
  got += 1
  if (got === count) {
    setTimeout(() => {
      client.stop()
      process.exit(0)
    }, GRACE_MS)
  }
})

setTimeout(() => {
  console.error(`node-ssdp client: ${got} of ${count} responses within ${timeoutMs} ms`)
  client.stop()
  process.exit(1)
}, timeoutMs)

// search() starts the client (binds and joins) and then sends.
client.search(st)
