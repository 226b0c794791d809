// A first probe of Intel AMX for igpt's CPU matmuls: C[M,N] f32 = A[M,K] f32 · B[K,N] f32 through
// AMX bf16 tiles (inputs rounded to bf16, sums in f32: mixed precision, as --precision bf16 on a GPU),
// on one core, for the matmul shapes of a 128-wide model's training step at batch 16 (784 positions:
// M = 12,544 rows). Timed with the f32 -> bf16 packing of both operands and without it; also the
// time to write the M x N output alone (a memset), the floor every kernel shares, and the
// tile instruction's own rate with no memory traffic (the ceiling). A naive kernel: a
// 32 x 32 block of C in four tiles, K in steps of 32. Built and run by bench/amx/amx_vs_gemm.sh.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <time.h>
#include <immintrin.h>
typedef struct __attribute__((aligned(64))) { uint8_t palette, start; uint8_t res[14]; uint16_t colsb[16]; uint8_t rows[16]; } cfg_t;
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static inline uint16_t bf(float x){uint32_t u;memcpy(&u,&x,4);u+=0x7fff+((u>>16)&1);return u>>16;}
static void pack_a(const float*A,uint16_t*Ap,int M,int K){ // row-major bf16, AVX-512 convert
  for(long i=0;i<(long)M*K;i+=32){
    __m512 lo=_mm512_loadu_ps(A+i), hi=_mm512_loadu_ps(A+i+16);
    __m512bh v=_mm512_cvtne2ps_pbh(hi,lo); _mm512_storeu_si512(Ap+i,(__m512i)v);
  }
}
static void pack_b(const float*B,uint16_t*Bp,int K,int N){ // [N/16][K/2][16][2]
  for(int jb=0;jb<N/16;jb++) for(int k2=0;k2<K/2;k2++) for(int j=0;j<16;j++) for(int p=0;p<2;p++)
    Bp[(((long)jb*(K/2)+k2)*16+j)*2+p]=bf(B[(long)(2*k2+p)*N+jb*16+j]);
}
static void kernel(const uint16_t*Ap,const uint16_t*Bp,float*C,int M,int K,int N){
  for(int i=0;i<M;i+=32) for(int j=0;j<N;j+=32){
    _tile_zero(0);_tile_zero(1);_tile_zero(2);_tile_zero(3);
    for(int k=0;k<K;k+=32){
      _tile_loadd(4,Ap+(long)i*K+k,K*2); _tile_loadd(5,Ap+(long)(i+16)*K+k,K*2);
      _tile_loadd(6,Bp+(((long)(j/16)*(K/2)+k/2)*16)*2,64); _tile_loadd(7,Bp+(((long)(j/16+1)*(K/2)+k/2)*16)*2,64);
      _tile_dpbf16ps(0,4,6);_tile_dpbf16ps(1,4,7);_tile_dpbf16ps(2,5,6);_tile_dpbf16ps(3,5,7);
    }
    _tile_stored(0,C+(long)i*N+j,N*4);_tile_stored(1,C+(long)i*N+j+16,N*4);
    _tile_stored(2,C+(long)(i+16)*N+j,N*4);_tile_stored(3,C+(long)(i+16)*N+j+16,N*4);
  }
}
int main(){
  if(syscall(SYS_arch_prctl,0x1023,18)){puts("no AMX permission");return 1;}
  cfg_t c;memset(&c,0,sizeof c);c.palette=1;for(int i=0;i<8;i++){c.rows[i]=16;c.colsb[i]=64;}
  _tile_loadconfig(&c);
  { // The ceiling: the tile instruction alone, four independent sums, no memory traffic.
    static uint16_t T[16*32] __attribute__((aligned(64)));
    for(int i=0;i<16*32;i++)T[i]=0x3f80; // bf16 1.0
    _tile_zero(0);_tile_zero(1);_tile_zero(2);_tile_zero(3);
    _tile_loadd(4,T,64);_tile_loadd(5,T,64);_tile_loadd(6,T,64);_tile_loadd(7,T,64);
    long iters=20000000;double t0=now();
    for(long i=0;i<iters;i++){_tile_dpbf16ps(0,4,6);_tile_dpbf16ps(1,4,7);_tile_dpbf16ps(2,5,6);_tile_dpbf16ps(3,5,7);}
    double t=now()-t0;
    printf("AMX bf16 1 core, the tile instruction alone: %.0f GFLOP/s\n",4.0*iters*16*16*32*2/t/1e9);
  }
  int shapes[][3]={{12544,128,384},{12544,128,512},{12544,512,128},{12544,128,128}};
  for(int s=0;s<4;s++){
    int M=shapes[s][0],K=shapes[s][1],N=shapes[s][2];
    float*A=aligned_alloc(64,(long)M*K*4),*B=aligned_alloc(64,(long)K*N*4),*C=aligned_alloc(64,(long)M*N*4);
    uint16_t*Ap=aligned_alloc(64,(long)M*K*2),*Bp=aligned_alloc(64,(long)K*N*2);
    srand(1);for(long i=0;i<(long)M*K;i++)A[i]=rand()/(float)RAND_MAX-0.5f;for(long i=0;i<(long)K*N;i++)B[i]=rand()/(float)RAND_MAX-0.5f;
    double best=1e9,bestk=1e9;
    for(int r=0;r<5;r++){double t0=now();pack_a(A,Ap,M,K);pack_b(B,Bp,K,N);double t1=now();kernel(Ap,Bp,C,M,K,N);double t2=now();
      if(t2-t0<best)best=t2-t0; if(t2-t1<bestk)bestk=t2-t1;}
    // check a few entries against f32
    double err=0,ref=0;for(int t=0;t<64;t++){int i=rand()%M,j=rand()%N;double d=0;for(int k=0;k<K;k++)d+=A[(long)i*K+k]*B[(long)k*N+j];err=fmax(err,fabs(d-C[(long)i*N+j]));ref=fmax(ref,fabs(d));}
    double tm=1e9;for(int r=0;r<5;r++){double t0=now();memset(C,r,(long)M*N*4);double t=now()-t0;if(t<tm)tm=t;}
    printf("AMX bf16 1 core m=%d k=%d n=%d: %.2f ms with packing (%.1f GFLOP/s), kernel alone %.2f ms (%.1f GFLOP/s); max error %.2e of %.2e; writing C alone %.2f ms\n",
      M,K,N,best*1e3,2.0*M*K*N/best/1e9,bestk*1e3,2.0*M*K*N/bestk/1e9,err,ref,tm*1e3);
    free(A);free(B);free(C);free(Ap);free(Bp);
  }
  _tile_release();
}
