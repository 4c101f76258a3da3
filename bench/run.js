#!/usr/bin/env node
// `npm run bench`: the microbenchmark suite (lib/bench/suite.ts, compiled to dist/bench/suite.js). See bench/README.md.
'use strict';
const path = require('path');
const fs = require('fs');

const suite = path.join(__dirname, '..', 'dist', 'bench', 'suite.js');
if (!fs.existsSync(suite)) {
  console.error(`bench: ${suite} not found; build the TypeScript first (npm run build:ts)`);
  process.exit(1);
}
require(suite)
  .main(process.argv.slice(2))
  .then((code) => { process.exitCode = code; })
  .catch((e) => { console.error(`bench: ${e && e.stack ? e.stack : e}`); process.exitCode = 1; });
