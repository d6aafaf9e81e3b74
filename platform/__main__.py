"""The ML worker's platform: API ─▶ SQS ─▶ Fargate Spot worker (scaled on queue depth) ─▶ PostgreSQL."""

import pulumi
from mlw_alarms import AlarmsArgs, WorkerAlarms
from mlw_config import PlatformConfig
from mlw_iam import AwsContext, IamArgs, WorkerIam
from mlw_images import ImagesArgs, WorkerImages
from mlw_params import ParamsArgs, WorkerParameters
from mlw_queues import QueuesArgs, WorkerQueues
from mlw_scaling import QueueDepthScaling, ScalingArgs
from mlw_service import ServiceArgs, WorkerService

cfg = PlatformConfig.load()
names = cfg.names
aws_ctx = AwsContext.current(cfg.region)

queues = WorkerQueues("ml-worker-queues", QueuesArgs(
    names=names, visibility_timeout=cfg.visibility_timeout, wait_time=cfg.wait_time,
    max_receive_count=cfg.max_receive_count, priority=cfg.priority_queue,
    sender_role_arns=(cfg.api_role_arn, *cfg.operator_role_arns),
))

images = WorkerImages("ml-worker-images", ImagesArgs(names=names))

iam = WorkerIam("ml-worker-iam", IamArgs(
    names=names, aws=aws_ctx, worker_repository_arn=images.worker_repository.arn,
    consumed_queue_arns=[q.arn for q in queues.consumed], dlq_arn=queues.dlq.arn, api_role_arn=cfg.api_role_arn,
))

service = WorkerService("ml-worker-service", ServiceArgs(
    cfg=cfg, aws=aws_ctx, image_uri=images.worker_image_uri, queues=queues, iam=iam,
))

scaling = QueueDepthScaling("ml-worker-scaling", ScalingArgs(
    cfg=cfg, queues=queues, cluster_name=service.cluster_name, service_name=service.service_name,
))

alarms = WorkerAlarms("ml-worker-alarms", AlarmsArgs(cfg=cfg, queues=queues))

params = WorkerParameters("ml-worker-parameters", ParamsArgs(
    names=names, queue_url=queues.queue.url, dlq_url=queues.dlq.url,
    priority_queue_url=queues.priority.url if queues.priority else None,
    cluster_name=service.cluster_name, service_name=service.service_name, log_group=service.log_group_name,
))

pulumi.export("ml_worker_queue_url", queues.queue.url)
pulumi.export("ml_worker_dlq_url", queues.dlq.url)
if queues.priority is not None:
    pulumi.export("ml_worker_priority_queue_url", queues.priority.url)
pulumi.export("ml_worker_cluster_name", service.cluster_name)
pulumi.export("ml_worker_service_name", service.service_name)
pulumi.export("ml_worker_log_group", service.log_group_name)
pulumi.export("base_image_uri", images.base_image_uri)
pulumi.export("worker_image_uri", images.worker_image_uri)
pulumi.export("alarm_topic_arn", alarms.topic.arn)
pulumi.export("ml_worker_security_group_id", service.security_group.id)
