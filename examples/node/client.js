#!/usr/bin/env node
// otavatar Node.js client: create an avatar from a portrait (or import an avatar file), then stream N frames.
//
//   npm install
//   node client.js --target 127.0.0.1:50051 --image portrait.png [--aligned] [--token T] [--frames 30]
//   node client.js --target 127.0.0.1:50051 --avatar-file me.avatar --out frames.json
//
// The proto is loaded at run time with @grpc/proto-loader (no code generation). Prints one JSON line:
// {"avatar_id": ..., "frames": N, "indices": [...], "width": W, "height": H, "bytes": ..., "render_ms_p50": ...}.
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const MAX_MESSAGE = 16 * 1024 * 1024;   // 512x512 RGBA frames are 1 MiB; portraits up to 10 MB

function parseArgs(argv) {
  const args = { target: '127.0.0.1:50051', frames: 30, aligned: false,
                 proto: path.join(__dirname, '..', '..', 'proto', 'avatar', 'v1', 'avatar.proto') };
  for (let i = 2; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, '');
    if (key === 'aligned') { args.aligned = true; continue; }
    const value = argv[++i];
    if (value === undefined) throw new Error(`--${key} needs a value`);
    args[key.replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = value;
  }
  args.frames = parseInt(args.frames, 10);
  if (!args.image && !args.avatarFile) throw new Error('give --image PORTRAIT or --avatar-file FILE');
  return args;
}

function loadService(protoPath) {
  const definition = protoLoader.loadSync(protoPath, {
    keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).avatar.v1.AvatarService;
}

function metadataFor(token) {
  const md = new grpc.Metadata();
  if (token) md.set('authorization', `Bearer ${token}`);
  return md;
}

function createAvatar(client, md, image, aligned) {
  return new Promise((resolve, reject) => {
    const call = client.CreateAvatar({ image, aligned }, md);
    let last = null;
    call.on('data', (progress) => {
      last = progress;
      if (progress.totalSteps) process.stderr.write(`inversion ${progress.step}/${progress.totalSteps}\n`);
    });
    call.on('error', reject);
    call.on('end', () => {
      if (last && last.state === 'READY') resolve(last.avatarId);
      else reject(new Error(`avatar ${last && last.avatarId} ended ${last && last.state}: ${last && last.reason}`));
    });
  });
}

function importAvatar(client, md, avatarFile) {
  return new Promise((resolve, reject) => {
    client.ImportAvatar({ avatarFile }, md, (err, info) => (err ? reject(err) : resolve(info.avatarId)));
  });
}

// A talking-like motion: small sinusoids on the first expression coefficients, frontal pose.
function coefficients(i) {
  const c = new Array(70).fill(0);
  for (let k = 0; k < 10; k++) c[k] = 0.5 * Math.sin(0.3 * i + k);
  return c;
}

function stream(client, md, avatarId, frames) {
  return new Promise((resolve, reject) => {
    const call = client.RenderStream(md);
    const got = { indices: [], width: 0, height: 0, bytes: 0, renderMs: [] };
    call.on('data', (r) => {
      got.indices.push(r.index);
      got.width = r.width;
      got.height = r.height;
      got.bytes += r.data.length;
      got.renderMs.push(r.timings.renderMs);
    });
    call.on('error', reject);
    call.on('end', () => resolve(got));
    call.write({ header: { avatarId, encoding: 'RAW_RGBA8', windowMode: 'CAUSAL', cameraMode: 'PORTRAIT',
                           delivery: 'ALL' } });
    for (let i = 0; i < frames; i++) call.write({ frame: { index: i, coeffs: coefficients(i) } });
    call.write({ end: {} });
    call.end();
  });
}

async function main() {
  const args = parseArgs(process.argv);
  const AvatarService = loadService(args.proto);
  const client = new AvatarService(args.target, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': MAX_MESSAGE, 'grpc.max_send_message_length': MAX_MESSAGE,
  });
  const md = metadataFor(args.token || process.env.OTAVATAR_TOKEN);
  const avatarId = args.image
    ? await createAvatar(client, md, fs.readFileSync(args.image), args.aligned)
    : await importAvatar(client, md, fs.readFileSync(args.avatarFile));
  const got = await stream(client, md, avatarId, args.frames);
  const sorted = got.renderMs.slice().sort((a, b) => a - b);
  const summary = { avatar_id: avatarId, frames: got.indices.length, indices: got.indices, width: got.width,
                    height: got.height, bytes: got.bytes,
                    render_ms_p50: sorted.length ? sorted[Math.floor(sorted.length / 2)] : null };
  if (args.out) fs.writeFileSync(args.out, JSON.stringify(summary));
  console.log(JSON.stringify(summary));
  client.close();
}

main().catch((err) => {
  console.error(`error: ${err.code !== undefined ? `${grpc.status[err.code]} ` : ''}${err.details || err.message}`);
  process.exit(1);
});
