/*
 * ring: two or more MPI ranks pass numbers around a ring (over whichever
 * transport mpirun chose: shared memory, TCP), ITER times with a pause,
 * so that a checkpoint lands in the middle. Every rank checks each
 * number it receives (FAIL and MPI_Abort on a wrong one). Rank 0 writes
 * "progress N" lines to stdout and the sum to argv[1] at the end: sum
 * over iterations i and ranks r of (i * 7 + r) mod 1000, which the test
 * computes too.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int rank, size, iters = argc > 2 ? atoi(argv[2]) : 200;
	long long sum = 0;

	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	for (int i = 0; i < iters; i++) {
		long long mine = (long long)(i * 7 + rank) % 1000, got = 0, total = 0;
		int to = (rank + 1) % size, from = (rank + size - 1) % size;
		/* Around the ring: after size-1 steps everyone has everything. */
		long long pass = mine;
		total = mine;
		for (int k = 1; k < size; k++) {
			MPI_Sendrecv(&pass, 1, MPI_LONG_LONG, to, i, &got, 1, MPI_LONG_LONG, from, i,
				     MPI_COMM_WORLD, MPI_STATUS_IGNORE);
			/* After k steps, what came is the number of rank - k. */
			long long want = (long long)(i * 7 + (rank + size - k) % size) % 1000;
			if (got != want) {
				printf("FAIL: rank %d iteration %d step %d: got %lld, want %lld\n",
				       rank, i, k, got, want);
				fflush(stdout);
				MPI_Abort(MPI_COMM_WORLD, 3);
			}
			total += got;
			pass = got;
		}
		sum += total;
		if (rank == 0 && i % 10 == 0) {
			printf("progress %d\n", i);
			fflush(stdout);
		}
		usleep(20000);
	}
	long long all = 0;
	MPI_Reduce(&sum, &all, 1, MPI_LONG_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
	if (rank == 0) {
		FILE *f = fopen(argv[1], "w");
		if (!f)
			return 2;
		/* Every rank summed the same totals: divide by the ranks. */
		fprintf(f, "%lld\n", all / size);
		fclose(f);
	}
	MPI_Finalize();
	return 0;
}
