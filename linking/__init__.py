"""Entity linking: KB, mention detection, candidates, disambiguation, evaluation."""

from linking.augmentation import shorten_person_mentions
from linking.candidates import CandidateConfig, CandidateGenerator
from linking.coreference import propagate_entities
from linking.disambiguation import Disambiguator, DisambiguatorConfig, PriorScorer, Scorer
from linking.entity_index import EntityIndex, EntitySearch
from linking.errors import BenchmarkFormatError, KBFormatError, LinkingError, ModelNotTrainedError
from linking.evaluation import EvaluationResult, PRFCounts, read_benchmark, score_document
from linking.features import FEATURE_NAMES, FeatureExtractor
from linking.kb import KnowledgeBase, file_inputs, read_aliases, read_entities
from linking.mentions import DetectorConfig, MentionDetector, load_spacy
from linking.pipeline import EntityLinker, LinkerConfig, LinkOptions, PreparedDocument
from linking.training import (
    CrossValidation,
    LinkerTrainingConfig,
    TrainedLinker,
    TrainingDocument,
    Transfer,
    cross_validate,
    leave_one_dataset_out,
    prepare_documents,
    train_disambiguator,
    train_linker,
)
from linking.types import AliasEntry, Candidate, Entity, GoldMention, Link, LinkingDocument, Mention

__all__ = [
    "FEATURE_NAMES",
    "AliasEntry",
    "BenchmarkFormatError",
    "Candidate",
    "CandidateConfig",
    "CandidateGenerator",
    "CrossValidation",
    "DetectorConfig",
    "Disambiguator",
    "DisambiguatorConfig",
    "Entity",
    "EntityIndex",
    "EntityLinker",
    "EntitySearch",
    "EvaluationResult",
    "FeatureExtractor",
    "GoldMention",
    "KBFormatError",
    "KnowledgeBase",
    "Link",
    "LinkOptions",
    "LinkerConfig",
    "LinkerTrainingConfig",
    "LinkingDocument",
    "LinkingError",
    "Mention",
    "MentionDetector",
    "ModelNotTrainedError",
    "PRFCounts",
    "PreparedDocument",
    "PriorScorer",
    "Scorer",
    "TrainedLinker",
    "TrainingDocument",
    "Transfer",
    "cross_validate",
    "file_inputs",
    "leave_one_dataset_out",
    "load_spacy",
    "prepare_documents",
    "propagate_entities",
    "read_aliases",
    "read_benchmark",
    "read_entities",
    "score_document",
    "shorten_person_mentions",
    "train_disambiguator",
    "train_linker",
]
