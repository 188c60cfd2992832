import { defineConfig } from 'vite';

// The build lands inside the Python package so `spinedx serve` ships it: a fresh clone needs no npm.
export default defineConfig({
  base: './',
  build: {
    outDir: '../src/spinedx/serve/static',
    emptyOutDir: true,
    assetsDir: 'assets',
    target: 'es2022',
    chunkSizeWarningLimit: 4000,
  },
  worker: { format: 'es' },
});
